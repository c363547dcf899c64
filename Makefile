# Thin entry points; the work is in scripts/ (see README.md).
.PHONY: run test build deps clean fuzz bench
run:
	scripts/run-demo.sh
test:
	scripts/test.sh
fuzz:
	scripts/fuzz.sh
bench:
	bench/run-bench.sh
clean:
	rm -rf build
