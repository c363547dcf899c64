/*
 * p11-demo-keys: initialise the demo token and create its AES-256 keys with an
 * exact PKCS#11 template. pkcs11-tool cannot do this: its --usage-decrypt sets
 * CKA_ENCRYPT and CKA_DECRYPT together, so encrypt-only, decrypt-only and
 * no-usage keys need C_GenerateKey with our own template.
 *
 * Idempotent: an initialised token and existing keys are reused; an existing
 * key whose attributes differ from the wanted ones is an error (never silently
 * "fixed"). PINs are read from files so they never appear on a command line.
 *
 * usage: p11-demo-keys MODULE TOKEN_LABEL SO_PIN_FILE USER_PIN_FILE LABEL:USAGE...
 *        USAGE is one of ed (encrypt+decrypt), e, d, none. CKA_ID = the label's bytes.
 * Build: cc -O2 -o p11-demo-keys p11-demo-keys.c $(pkg-config --cflags p11-kit-1) -ldl
 */
#include <dlfcn.h>
#include <p11-kit/pkcs11.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static CK_FUNCTION_LIST_PTR p11;

static void die(const char *what, CK_RV rv) {
  fprintf(stderr, "p11-demo-keys: %s failed: CKR 0x%lx\n", what, (unsigned long)rv);
  exit(1);
}
#define CHECK(call) do { CK_RV rv_ = (call); if (rv_ != CKR_OK) die(#call, rv_); } while (0)

static void read_pin(const char *path, char *buf, size_t cap) {
  FILE *f = fopen(path, "r");
  if (!f) { fprintf(stderr, "p11-demo-keys: cannot open PIN file %s\n", path); exit(1); }
  if (!fgets(buf, (int)cap, f)) { fprintf(stderr, "p11-demo-keys: empty PIN file %s\n", path); exit(1); }
  fclose(f);
  buf[strcspn(buf, "\r\n")] = 0;
}

static void pad32(unsigned char out[32], const char *s) {
  memset(out, ' ', 32);
  memcpy(out, s, strlen(s) > 32 ? 32 : strlen(s));
}

/* Returns the slot holding an initialised token labelled `label`, or (CK_SLOT_ID)-1. */
static CK_SLOT_ID find_token(const char *label, CK_SLOT_ID *uninitialised) {
  CK_ULONG n = 0;
  CHECK(p11->C_GetSlotList(CK_TRUE, NULL, &n));
  CK_SLOT_ID *slots = calloc(n ? n : 1, sizeof *slots);
  CHECK(p11->C_GetSlotList(CK_TRUE, slots, &n));
  unsigned char want[32];
  pad32(want, label);
  CK_SLOT_ID found = (CK_SLOT_ID)-1;
  if (uninitialised) *uninitialised = (CK_SLOT_ID)-1;
  for (CK_ULONG i = 0; i < n; i++) {
    CK_TOKEN_INFO ti;
    CHECK(p11->C_GetTokenInfo(slots[i], &ti));
    if (!(ti.flags & CKF_TOKEN_INITIALIZED)) {
      if (uninitialised && *uninitialised == (CK_SLOT_ID)-1) *uninitialised = slots[i];
    } else if (memcmp(ti.label, want, 32) == 0) {
      found = slots[i];
    }
  }
  free(slots);
  return found;
}

static void init_token(CK_SLOT_ID slot, const char *label, const char *so_pin, const char *user_pin) {
  unsigned char lab[32];
  pad32(lab, label);
  CHECK(p11->C_InitToken(slot, (CK_UTF8CHAR_PTR)so_pin, strlen(so_pin), lab));
  /* SoftHSM moves a freshly initialised token to a new slot id: look it up again. */
  CHECK(p11->C_Finalize(NULL));
  CHECK(p11->C_Initialize(NULL));
  CK_SLOT_ID s = find_token(label, NULL);
  if (s == (CK_SLOT_ID)-1) die("finding the token after C_InitToken", CKR_GENERAL_ERROR);
  CK_SESSION_HANDLE h;
  CHECK(p11->C_OpenSession(s, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h));
  CHECK(p11->C_Login(h, CKU_SO, (CK_UTF8CHAR_PTR)so_pin, strlen(so_pin)));
  CHECK(p11->C_InitPIN(h, (CK_UTF8CHAR_PTR)user_pin, strlen(user_pin)));
  CHECK(p11->C_Logout(h));
  CHECK(p11->C_CloseSession(h));
}

static CK_BBOOL get_bool(CK_SESSION_HANDLE h, CK_OBJECT_HANDLE o, CK_ATTRIBUTE_TYPE t) {
  CK_BBOOL v = CK_FALSE;
  CK_ATTRIBUTE a = {t, &v, sizeof v};
  CHECK(p11->C_GetAttributeValue(h, o, &a, 1));
  return v;
}

static void ensure_key(CK_SESSION_HANDLE h, const char *label, const char *usage) {
  CK_BBOOL enc, dec;
  if (!strcmp(usage, "ed")) { enc = CK_TRUE; dec = CK_TRUE; }
  else if (!strcmp(usage, "e")) { enc = CK_TRUE; dec = CK_FALSE; }
  else if (!strcmp(usage, "d")) { enc = CK_FALSE; dec = CK_TRUE; }
  else if (!strcmp(usage, "none")) { enc = CK_FALSE; dec = CK_FALSE; }
  else { fprintf(stderr, "p11-demo-keys: bad usage '%s' for %s\n", usage, label); exit(2); }

  CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
  CK_ATTRIBUTE find[] = {{CKA_CLASS, &cls, sizeof cls}, {CKA_LABEL, (void *)label, strlen(label)}};
  CK_OBJECT_HANDLE objs[2];
  CK_ULONG n = 0;
  CHECK(p11->C_FindObjectsInit(h, find, 2));
  CHECK(p11->C_FindObjects(h, objs, 2, &n));
  CHECK(p11->C_FindObjectsFinal(h));
  if (n > 1) { fprintf(stderr, "p11-demo-keys: several keys labelled %s\n", label); exit(1); }

  const char *state = "exists";
  if (n == 0) {
    CK_KEY_TYPE kt = CKK_AES;
    CK_ULONG len = 32;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof cls},          {CKA_KEY_TYPE, &kt, sizeof kt},
        {CKA_VALUE_LEN, &len, sizeof len},      {CKA_TOKEN, &yes, sizeof yes},
        {CKA_PRIVATE, &yes, sizeof yes},        {CKA_SENSITIVE, &yes, sizeof yes},
        {CKA_EXTRACTABLE, &no, sizeof no},      {CKA_ENCRYPT, &enc, sizeof enc},
        {CKA_DECRYPT, &dec, sizeof dec},        {CKA_WRAP, &no, sizeof no},
        {CKA_UNWRAP, &no, sizeof no},           {CKA_SIGN, &no, sizeof no},
        {CKA_VERIFY, &no, sizeof no},           {CKA_DERIVE, &no, sizeof no},
        {CKA_LABEL, (void *)label, strlen(label)}, {CKA_ID, (void *)label, strlen(label)},
    };
    CK_MECHANISM mech = {CKM_AES_KEY_GEN, NULL, 0};
    CHECK(p11->C_GenerateKey(h, &mech, tmpl, sizeof tmpl / sizeof tmpl[0], &objs[0]));
    state = "created";
  }

  CK_ULONG len = 0;
  CK_KEY_TYPE kt = 0;
  CK_ATTRIBUTE a[] = {{CKA_VALUE_LEN, &len, sizeof len}, {CKA_KEY_TYPE, &kt, sizeof kt}};
  CHECK(p11->C_GetAttributeValue(h, objs[0], a, 2));
  CK_BBOOL e = get_bool(h, objs[0], CKA_ENCRYPT), d = get_bool(h, objs[0], CKA_DECRYPT);
  CK_BBOOL s = get_bool(h, objs[0], CKA_SENSITIVE), x = get_bool(h, objs[0], CKA_EXTRACTABLE);
  if (kt != CKK_AES || len != 32 || e != enc || d != dec || !s || x) {
    fprintf(stderr, "p11-demo-keys: existing key %s has unexpected attributes "
            "(AES=%d len=%lu encrypt=%d decrypt=%d sensitive=%d extractable=%d)\n",
            label, kt == CKK_AES, (unsigned long)len, e, d, s, x);
    exit(1);
  }
  printf("  %-18s %-7s AES-256 encrypt=%s decrypt=%s sensitive, not extractable\n", label, state,
         e ? "yes" : "no", d ? "yes" : "no");
}

int main(int argc, char **argv) {
  if (argc < 5) {
    fprintf(stderr, "usage: %s MODULE TOKEN_LABEL SO_PIN_FILE USER_PIN_FILE LABEL:USAGE...\n", argv[0]);
    return 2;
  }
  void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
  if (!lib) { fprintf(stderr, "p11-demo-keys: dlopen %s: %s\n", argv[1], dlerror()); return 1; }
  CK_C_GetFunctionList gfl = (CK_C_GetFunctionList)dlsym(lib, "C_GetFunctionList");
  if (!gfl) { fprintf(stderr, "p11-demo-keys: no C_GetFunctionList in %s\n", argv[1]); return 1; }
  CHECK(gfl(&p11));
  CHECK(p11->C_Initialize(NULL));

  char so_pin[256], user_pin[256];
  read_pin(argv[3], so_pin, sizeof so_pin);
  read_pin(argv[4], user_pin, sizeof user_pin);

  CK_SLOT_ID free_slot;
  CK_SLOT_ID slot = find_token(argv[2], &free_slot);
  if (slot == (CK_SLOT_ID)-1) {
    if (free_slot == (CK_SLOT_ID)-1) die("finding an uninitialised slot", CKR_SLOT_ID_INVALID);
    init_token(free_slot, argv[2], so_pin, user_pin);
    slot = find_token(argv[2], NULL);
    printf("  token %s initialised\n", argv[2]);
  } else {
    printf("  token %s exists\n", argv[2]);
  }

  CK_SESSION_HANDLE h;
  CHECK(p11->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL, &h));
  CK_RV rv = p11->C_Login(h, CKU_USER, (CK_UTF8CHAR_PTR)user_pin, strlen(user_pin));
  if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) die("C_Login(user)", rv);
  memset(so_pin, 0, sizeof so_pin);
  memset(user_pin, 0, sizeof user_pin);

  for (int i = 5; i < argc; i++) {
    char *spec = argv[i], *colon = strchr(spec, ':');
    if (!colon) { fprintf(stderr, "p11-demo-keys: bad key spec '%s' (LABEL:USAGE)\n", spec); return 2; }
    *colon = 0;
    ensure_key(h, spec, colon + 1);
  }
  p11->C_Logout(h);
  p11->C_CloseSession(h);
  p11->C_Finalize(NULL);
  return 0;
}
