"""Runs the Python test modules given on the command line with unittest and writes a
GoogleTest-style XML report to $XML_OUTPUT_FILE (one <testcase> per test), so that
scripts/test counts each case, and with --gtest-json PATH GoogleTest's JSON report (what
the VM harness reads from the guest). Exits non-zero when any case fails."""
import importlib.util
import os
import sys
import unittest
from xml.sax.saxutils import quoteattr


class Recorder(unittest.TextTestResult):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cases = []  # (suite, name, failure text or None, skipped)

    def addSuccess(self, test):
        super().addSuccess(test)
        self.cases.append((test, None, False))

    def addFailure(self, test, err):
        super().addFailure(test, err)
        self.cases.append((test, self._exc_info_to_string(err, test), False))

    def addError(self, test, err):
        super().addError(test, err)
        self.cases.append((test, self._exc_info_to_string(err, test), False))

    def addSkip(self, test, reason):
        super().addSkip(test, reason)
        self.cases.append((test, None, True))


def write_gtest_json(path, cases):
    """GoogleTest's JSON report (--gtest_output=json), as the VM harness reads it."""
    import json
    suites = {}
    for test, text, skip in cases:
        suite, _, name = test.id().rpartition(".")
        entry = {"name": name, "status": "RUN", "result": "SKIPPED" if skip else "COMPLETED"}
        if text:
            entry["failures"] = [{"failure": text, "type": ""}]
        suites.setdefault(suite, []).append(entry)
    report = {"testsuites": [{"name": name, "testsuite": tests} for name, tests in suites.items()]}
    with open(path, "w") as out:
        json.dump(report, out, indent=1)


def main():
    args = sys.argv[1:]
    gtest_json = None
    if "--gtest-json" in args:
        at = args.index("--gtest-json")
        gtest_json = args[at + 1]
        del args[at:at + 2]
    module_dir, tests = args[0], args[1:]
    sys.path.insert(0, module_dir)
    suite = unittest.TestSuite()
    for path in tests:
        spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        suite.addTests(unittest.defaultTestLoader.loadTestsFromModule(module))
    result = unittest.TextTestRunner(resultclass=Recorder, verbosity=2, stream=sys.stdout).run(suite)
    failures = sum(1 for _, text, _ in result.cases if text)
    skipped = sum(1 for _, _, skip in result.cases if skip)
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             f'<testsuites tests="{len(result.cases)}" failures="{failures}" disabled="0" errors="0" name="python">',
             f'  <testsuite name="python" tests="{len(result.cases)}" failures="{failures}" skipped="{skipped}">']
    for test, text, skip in result.cases:
        name = quoteattr(test.id())
        if text:
            lines.append(f'    <testcase name={name}><failure message="failed">{quoteattr(text)[1:-1]}</failure></testcase>')
        elif skip:
            lines.append(f'    <testcase name={name}><skipped/></testcase>')
        else:
            lines.append(f'    <testcase name={name}/>')
    lines += ['  </testsuite>', '</testsuites>']
    if gtest_json:
        write_gtest_json(gtest_json, result.cases)
    output = os.environ.get("XML_OUTPUT_FILE")
    if output:
        with open(output, "w") as xml:
            xml.write("\n".join(lines) + "\n")
    sys.exit(0 if result.wasSuccessful() and result.cases else 1)


if __name__ == "__main__":
    main()
