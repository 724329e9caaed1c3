# ViTQuant build entry points. `make test` and `make demo` install what they need first.
DOTNET ?= dotnet
CONFIG ?= Release

.PHONY: build test demo bench bench-compare deps clean pack sample

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

# The library package (ViTQuant) and the tool package (ViTQuant.Tool, command vitq) into artifacts/, at the
# one version of Directory.Build.props. The same version already restored into the NuGet cache (an
# earlier pack) would shadow the new package, so it is removed first.
VERSION := $(shell sed -n 's:.*<Version>\(.*\)</Version>.*:\1:p' Directory.Build.props)

pack:
	rm -rf artifacts
	@cache="$$($(DOTNET) nuget locals global-packages --list | sed 's/^global-packages: //')"; \
	  echo "removing ViTQuant $(VERSION) and ViTQuant.Tool $(VERSION) from $$cache"; \
	  rm -rf "$$cache/vitquant/$(VERSION)" "$$cache/vitquant.tool/$(VERSION)"
	$(DOTNET) pack src/ViTQuant -c $(CONFIG) -nologo -v q -clp:ErrorsOnly -o artifacts
	$(DOTNET) pack src/ViTQuant.Cli -c $(CONFIG) -nologo -v q -clp:ErrorsOnly -o artifacts
	@ls -l artifacts

clean:
	$(DOTNET) clean ViTQuant.slnx -nologo -v q
