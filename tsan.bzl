"""ThreadSanitizer's flags for targets that want them; none under --config=asan (the two
sanitizers cannot be combined), where those targets are plain ASan builds."""

TSAN = select({
    "//:asan_build": [],
    "//conditions:default": ["-fsanitize=thread"],
})
