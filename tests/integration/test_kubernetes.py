"""The Kubernetes manifests in deploy/kubernetes, checked for structure (no cluster here):
kustomization lists every manifest; the Deployment's probes use the configuration's ping
path over HTTPS on the listening port; a PodDisruptionBudget selects the Deployment's pods
and leaves an eviction possible; replicas spread over zones; the configuration and the
Secrets are whole-directory volume mounts (a subPath mount never sees an update) and the
configuration sets reload.watch; every file the configuration reads is a key of the Secret
mounted there; and the ConfigMap's configuration passes the real daemon's --check-config
once its paths point at stand-in files.
"""

import os
import re
import shutil
import subprocess
import tempfile
import unittest

import yaml

from harness import REPO, find_binary

KUBE = os.path.join(REPO, "deploy", "kubernetes")


def load_manifests():
    docs = {}
    for name in sorted(os.listdir(KUBE)):
        if not name.endswith(".yaml") or name == "kustomization.yaml":
            continue
        with open(os.path.join(KUBE, name)) as f:
            for doc in yaml.safe_load_all(f):
                if doc:
                    docs.setdefault(doc["kind"], []).append((name, doc))
    return docs


def one(docs, kind):
    items = docs.get(kind, [])
    if len(items) != 1:
        raise AssertionError(f"expected one {kind}, found {len(items)}")
    return items[0][1]


def selects(match_labels, labels):
    return bool(match_labels) and all(labels.get(k) == v for k, v in match_labels.items())


def under(path, mount):
    return path == mount or path.startswith(mount.rstrip("/") + "/")


class KubernetesManifestsTest(unittest.TestCase):
    maxDiff = 2000

    @classmethod
    def setUpClass(cls):
        cls.docs = load_manifests()
        cls.deployment = one(cls.docs, "Deployment")
        cls.pod = cls.deployment["spec"]["template"]
        cls.container = cls.pod["spec"]["containers"][0]
        cls.configmap = one(cls.docs, "ConfigMap")
        cls.env = {e["name"]: e.get("value") for e in cls.container.get("env", [])}
        cls.config_path = cls.env["XKS_CONFIG"]
        cls.config_text = cls.configmap["data"][os.path.basename(cls.config_path)]
        cls.config = yaml.safe_load(cls.config_text)
        cls.volumes = {v["name"]: v for v in cls.pod["spec"]["volumes"]}
        cls.mounts = cls.container["volumeMounts"]

    def test_kustomization_lists_every_manifest(self):
        with open(os.path.join(KUBE, "kustomization.yaml")) as f:
            resources = set(yaml.safe_load(f)["resources"])
        files = {n for n in os.listdir(KUBE) if n.endswith(".yaml") and n != "kustomization.yaml"}
        self.assertEqual(resources, files)

    def test_probes_use_the_ping_path_over_https(self):
        ping = self.config.get("server", {}).get("ping_path", "/ping")
        listen_port = int(self.config["server"]["listen"].rsplit(":", 1)[1])
        ports = {p["name"]: p["containerPort"] for p in self.container["ports"]}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            with self.subTest(probe=probe):
                get = self.container[probe]["httpGet"]
                self.assertEqual(get["path"], ping)
                self.assertEqual(get["scheme"], "HTTPS")
                port = ports.get(get["port"], get["port"])
                self.assertEqual(port, listen_port)
        # Liveness gives up far later than readiness: an HSM outage makes /ping 503 on
        # every replica, and restarting them all would not fix it.
        live, ready = self.container["livenessProbe"], self.container["readinessProbe"]
        self.assertGreater(live["periodSeconds"] * live["failureThreshold"],
                           4 * ready["periodSeconds"] * ready["failureThreshold"])

    def test_a_disruption_budget_selects_the_pods_and_allows_an_eviction(self):
        pdb = one(self.docs, "PodDisruptionBudget")
        self.assertEqual(pdb["apiVersion"], "policy/v1")
        labels = self.pod["metadata"]["labels"]
        self.assertTrue(selects(pdb["spec"]["selector"]["matchLabels"], labels))
        self.assertTrue(selects(self.deployment["spec"]["selector"]["matchLabels"], labels))
        replicas = self.deployment["spec"]["replicas"]
        self.assertGreaterEqual(replicas, 2, "AWS asks for at least two proxies")
        if "minAvailable" in pdb["spec"]:
            self.assertGreaterEqual(pdb["spec"]["minAvailable"], 1)
            self.assertLess(pdb["spec"]["minAvailable"], replicas, "no eviction would be allowed")
        else:
            self.assertGreaterEqual(pdb["spec"]["maxUnavailable"], 1)
        # KMS sees the replica count as xksProxyFleetSize.
        self.assertEqual(self.config["server"]["fleet_size"], replicas)
        # A rolling update never goes below the replica count.
        self.assertEqual(self.deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0)

    def test_replicas_spread_over_zones(self):
        labels = self.pod["metadata"]["labels"]
        zone = [c for c in self.pod["spec"].get("topologySpreadConstraints", [])
                if c["topologyKey"] == "topology.kubernetes.io/zone"]
        self.assertEqual(len(zone), 1)
        self.assertEqual(zone[0]["maxSkew"], 1)
        self.assertTrue(selects(zone[0]["labelSelector"]["matchLabels"], labels))

    def test_config_and_secrets_are_directory_mounts_and_watched(self):
        self.assertIs(self.config.get("reload", {}).get("watch"), True)
        for m in self.mounts:
            vol = self.volumes[m["name"]]
            if "configMap" in vol or "secret" in vol:
                with self.subTest(mount=m["mountPath"]):
                    self.assertNotIn("subPath", m, "a subPath mount never receives updates")
                    self.assertTrue(m.get("readOnly"))
        config_mounts = [m for m in self.mounts
                         if self.volumes[m["name"]].get("configMap", {}).get("name")
                         == self.configmap["metadata"]["name"]]
        self.assertEqual(len(config_mounts), 1)
        self.assertEqual(os.path.dirname(self.config_path), config_mounts[0]["mountPath"])

    def files_read(self):
        """(setting, path) of every file the configuration reads besides itself."""
        c = self.config
        out = []
        for k in ("certificate", "private_key", "client_ca"):
            if c["tls"].get(k):
                out.append((f"tls.{k}", c["tls"][k]))
        hsms = c["hsm"] if isinstance(c["hsm"], list) else [c["hsm"]]
        for h in hsms:
            if "file" in h["pin"]:
                out.append(("hsm.pin.file", h["pin"]["file"]))
        for ks in c["keystores"]:
            for cr in ks["credentials"]:
                if "file" in cr["secret"]:
                    out.append(("secret.file", cr["secret"]["file"]))
            if ks.get("policy"):
                out.append(("policy", ks["policy"]))
        return out

    def test_every_file_read_is_a_key_of_the_secret_mounted_there(self):
        secrets = {d["metadata"]["name"]: d for _, d in self.docs.get("Secret", [])}
        files = self.files_read()
        self.assertGreaterEqual(len(files), 4)
        for setting, path in files:
            with self.subTest(setting=setting, path=path):
                mount = [m for m in self.mounts if under(path, m["mountPath"])]
                self.assertEqual(len(mount), 1, f"{path} is in no (or several) volume mounts")
                vol = self.volumes[mount[0]["name"]]
                self.assertIn("secret", vol, f"{path} is not in a Secret volume")
                secret = secrets[vol["secret"]["secretName"]]
                keys = set(secret.get("stringData", {})) | set(secret.get("data", {}))
                self.assertIn(os.path.relpath(path, mount[0]["mountPath"]), keys)
                if setting != "tls.certificate":
                    # Secret files group-readable by fsGroup need the explicit allowance.
                    self.assertIn(vol["secret"].get("defaultMode"), (0o400, 0o440))

    def test_the_configmap_config_passes_check_config(self):
        binary = find_binary("xks-proxy", "XKS_PROXY_BIN")
        tmp = tempfile.mkdtemp(prefix="xks-it-kube-")
        try:
            text = self.config_text.replace("/etc/xks-proxy/", f"{tmp}/etc/xks-proxy/")
            module = self.config["hsm"]["module"]
            text = text.replace(module, f"{tmp}{module}")
            stand_ins = {f"{tmp}{module}": b"\x7fELF stand-in module\n"}
            for setting, path in self.files_read():
                p = f"{tmp}{path}"
                if setting == "hsm.pin.file":
                    stand_ins[p] = b"1234\n"
                elif setting == "secret.file":
                    stand_ins[p] = b"A" * 43 + b"\n"
            for p, data in stand_ins.items():
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(os.open(p, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
                    f.write(data)
            tls = f"{tmp}/etc/xks-proxy/tls"
            os.makedirs(tls, exist_ok=True)
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-days", "30", "-subj",
                            "/CN=xks.example.com", "-keyout", f"{tls}/tls.key", "-out",
                            f"{tls}/tls.crt"], check=True, capture_output=True)
            os.chmod(f"{tls}/tls.key", 0o600)
            config = os.path.join(tmp, "xks-proxy.yaml")
            with open(config, "w") as f:
                f.write(text)
            res = subprocess.run([binary, "--check-config", "--config", config],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(res.returncode, 0, res.stdout + res.stderr)
            self.assertIn(": OK", res.stdout)
            # And a configuration that does not load is what a watch-triggered reload
            # refuses: the same check names the setting.
            with open(config, "w") as f:
                f.write(text.replace("watch: true", "watch: sometimes"))
            res = subprocess.run([binary, "--check-config", "--config", config],
                                 capture_output=True, text=True, timeout=60)
            self.assertEqual(res.returncode, 78, res.stdout + res.stderr)
            self.assertRegex(res.stderr, re.escape("reload.watch") + r".*true or false")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
