"""Every checkov skip in terraform/ carries a reason next to it."""
import os
import re
import unittest

from deploytest import REPO

SKIP = re.compile(r"#\s*checkov:skip=([A-Z0-9_]+)(?::\s*(.*))?")


class CheckovSkips(unittest.TestCase):
    def test_each_skip_is_justified(self):
        skips = []
        for root, _, files in os.walk(os.path.join(REPO, "terraform")):
            for name in files:
                if not name.endswith(".tf"):
                    continue
                path = os.path.join(root, name)
                with open(path) as f:
                    for number, line in enumerate(f, 1):
                        m = SKIP.search(line)
                        if m:
                            skips.append(m.group(1))
                            reason = (m.group(2) or "").strip()
                            self.assertGreaterEqual(len(reason), 40, f"{path}:{number}: {m.group(1)} needs a reason")
        self.assertTrue(skips)  # the skips exist and were all looked at


if __name__ == "__main__":
    unittest.main()
