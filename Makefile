# ViTQuant build entry points. `make test` and `make demo` install what they need first.
DOTNET ?= dotnet
CONFIG ?= Release

.PHONY: build test demo bench bench-compare deps clean pack pack-library pack-tool sample

deps:
	@tools/ensure-deps.sh

build:
	$(DOTNET) build ViTQuant.slnx -c $(CONFIG) -nologo -v q -clp:ErrorsOnly

# The unit tests, then the QuickStart sample from the packed library package.
test: deps
	$(DOTNET) test tests/ViTQuant.Tests -c $(CONFIG) -nologo -v q --logger "console;verbosity=minimal"
	$(MAKE) --no-print-directory sample

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
# earlier pack) would shadow the new package, so each target removes it first.
VERSION := $(shell sed -n 's:.*<Version>\(.*\)</Version>.*:\1:p' Directory.Build.props)

pack: pack-library pack-tool
	@ls -l artifacts

pack-library:
	@rm -f artifacts/ViTQuant.$(VERSION).nupkg artifacts/ViTQuant.$(VERSION).snupkg
	@cache="$$($(DOTNET) nuget locals global-packages --list | sed 's/^global-packages: //')"; rm -rf "$$cache/vitquant/$(VERSION)"
	$(DOTNET) pack src/ViTQuant -c $(CONFIG) -nologo -v q -clp:ErrorsOnly -o artifacts

pack-tool:
	@rm -f artifacts/ViTQuant.Tool.$(VERSION).nupkg
	@cache="$$($(DOTNET) nuget locals global-packages --list | sed 's/^global-packages: //')"; rm -rf "$$cache/vitquant.tool/$(VERSION)"
	$(DOTNET) pack src/ViTQuant.Cli -c $(CONFIG) -nologo -v q -clp:ErrorsOnly -o artifacts

# samples/QuickStart run as a user runs it: against the freshly packed ViTQuant package (its nuget.config
# points at artifacts/), in out/quickstart/ where it writes its checkpoint and ONNX file.
sample: deps pack-library
	$(DOTNET) restore samples/QuickStart --force -v q
	mkdir -p out/quickstart
	cd out/quickstart && $(DOTNET) run -c $(CONFIG) --no-restore --project ../../samples/QuickStart

clean:
	$(DOTNET) clean ViTQuant.slnx -nologo -v q
