# Thin entry points; the work is in scripts/ (see README.md).
.PHONY: run test build deps clean fuzz
run:
	scripts/run-demo.sh
test:
	scripts/test.sh
fuzz:
	scripts/fuzz.sh
clean:
	rm -rf build
