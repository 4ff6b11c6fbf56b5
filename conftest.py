"""Root pytest configuration: skip the doctests that need Vowpal Wabbit where no wheel exists
(vowpal-wabbit-next has wheels only for CPython <= 3.12 on x86_64 Linux, macOS and Windows)."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("vowpal_wabbit_next") else ["banditroute/vw_policy.py",
                                                                          "ope/vw_reward.py"]
