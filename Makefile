# ViTQuant build entry points. `make test` and `make demo` install what they need first.
DOTNET ?= dotnet
CONFIG ?= Release

.PHONY: build test demo bench bench-compare deps clean

deps:
	@tools/ensure-deps.sh

build:
	$(DOTNET) build ViTQuant.slnx -c $(CONFIG) -nologo -v q -clp:ErrorsOnly

test: deps
	$(DOTNET) test tests/ViTQuant.Tests -c $(CONFIG) -nologo -v q --logger "console;verbosity=minimal"

# The main job: the shipped model through the data-free pipeline at W4A4 (quick preset).
demo: deps
	./vitq demo --preset quick --bits w4a4

bench: deps
	./vitq bench --arch vit_fmnist --batch 64
	./vitq bench --arch deit_tiny_patch16_224 --batch 8

# Side by side with PyTorch 1.13 (Debian python3-torch), same shapes and thread count.
bench-compare: deps
	@tools/ensure-deps.sh python3-torch
	tools/reference/bench_compare.sh

clean:
	$(DOTNET) clean ViTQuant.slnx -nologo -v q
