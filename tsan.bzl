"""ThreadSanitizer's flags for targets that want them, and the library built with them;
under --config=asan (the two sanitizers cannot be combined) neither: those targets are
plain ASan builds on the ASan-built //:pcie, which the asan configuration compiles anyway
(a second ASan build of the library as //:pcie_tsan would only cost minutes)."""

TSAN = select({
    "//:asan_build": [],
    "//conditions:default": ["-fsanitize=thread"],
})

PCIE_TSAN = select({
    "//:asan_build": ["//:pcie"],
    "//conditions:default": ["//:pcie_tsan"],
})
