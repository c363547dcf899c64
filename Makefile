# Thin entry points; the work is in scripts/ (see README.md).
.PHONY: run test build deps clean
run:
	scripts/run-demo.sh
test:
	scripts/test.sh
clean:
	rm -rf build
