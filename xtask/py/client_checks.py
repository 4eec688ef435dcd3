"""The pass/fail bookkeeping shared by the client test scripts (`openai_client_test.py`,
`embeddings_client_test.py`, `structured_client_test.py`, `schema_property_test.py`): each check prints one `[ok]`/`[FAIL]` line, failures are kept,
and `report` prints the `N failure(s)` line the Rust tests look for."""

FAILURES = []


def check(name, condition, detail=""):
    status = "ok" if condition else "FAIL"
    print(f"[{status}] {name}" + (f": {detail}" if detail and not condition else ""))
    if not condition:
        FAILURES.append(f"{name}: {detail}")


def run(name, fn):
    try:
        fn()
    except Exception as exc:  # any client error is a failed check, not a crash
        check(name, False, f"{type(exc).__name__}: {exc}")


def report(suffix=""):
    """Print the failure count (and `suffix`, e.g. the time taken) and the failures; the exit
    status for `sys.exit`."""
    print(f"{len(FAILURES)} failure(s){suffix}")
    for f in FAILURES:
        print(f"  - {f}")
    return 1 if FAILURES else 0
