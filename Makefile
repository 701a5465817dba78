# ironclaw - top-level entry points. CMake does the building; this file only
# strings set-up, build, image and tests together for people and CI.
BUILD      ?= build
TEST_BUILD ?= build-test
JOBS       ?= $(shell nproc)
PREFIX     ?= /usr/local
IRONCLAW   := $(BUILD)/ironclaw

.PHONY: all setup build image demo test unit fuzz-smoke integration fuzz bench lint install clean help

all: build

help:
	@echo "make demo     set up, build, boot a microVM and run a job in it"
	@echo "make test     set up, build, run every test (unit under ASan/UBSan, integration)"
	@echo "make bench    benchmarks (ratios measured side by side)"
	@echo "make fuzz     run the decoder fuzzer for longer (FUZZ_SECONDS=300)"
	@echo "make lint     cppcheck and clang-tidy (checks in .clang-tidy)"
	@echo "make install  install to PREFIX=$(PREFIX)"

setup:
	@bash scripts/setup.sh

build:
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DIC_TESTS=OFF >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

image: build
	@$(IRONCLAW) image build

demo: setup image
	@echo "--- ironclaw exec: a fresh microVM runs a job and is destroyed ---"
	$(IRONCLAW) exec --name demo -- sh -c 'echo "hello from $$(uname -sr) in a microVM"; cat /proc/cpuinfo | grep -m1 "model name"; echo "to stderr" >&2; exit 3' ; \
	  echo "exit status: $$? (the command's own)"
	$(IRONCLAW) ps

# Unit tests and the fuzz smoke run use a separate clang build with
# AddressSanitizer and UBSan.
$(TEST_BUILD)/CMakeCache.txt:
	@CC=clang cmake -S . -B $(TEST_BUILD) -DCMAKE_BUILD_TYPE=Debug -DIC_SANITIZE=ON -DIC_FUZZ=ON >/dev/null

unit: $(TEST_BUILD)/CMakeCache.txt
	@cmake --build $(TEST_BUILD) -j$(JOBS)
	@cd $(TEST_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
	  ctest --output-on-failure

fuzz-smoke: $(TEST_BUILD)/CMakeCache.txt
	@cmake --build $(TEST_BUILD) -j$(JOBS)
	@bash tests/fuzz/run.sh $(TEST_BUILD) $${FUZZ_SECONDS:-20}

fuzz: $(TEST_BUILD)/CMakeCache.txt
	@cmake --build $(TEST_BUILD) -j$(JOBS)
	@bash tests/fuzz/run.sh $(TEST_BUILD) $${FUZZ_SECONDS:-300}

integration: image
	@bash tests/integration/run.sh $(BUILD)

test: setup build
	@$(MAKE) --no-print-directory image
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory fuzz-smoke
	@$(MAKE) --no-print-directory integration

bench: setup image
	@bash bench/run.sh $(BUILD)

lint: $(TEST_BUILD)/CMakeCache.txt
	@bash scripts/lint.sh $(TEST_BUILD)

install: build
	@cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf $(BUILD) $(TEST_BUILD)
