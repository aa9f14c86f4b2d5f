"""Every fenced block a reader may copy is run by a test.

The blocks of the README, ARCHITECTURE.md, SECURITY.md, bench/README.md and every page under docs/
(``support.readme_blocks.documented_files``) are each either run by the test named for it in ``RUNNERS``
(found there with ``find_block`` by file, heading, fence and first line, so a block that moves, or whose
heading, fence or first line changes, fails that test instead of being skipped), or fenced ``text``:
output, query plans and diagrams, shown and never run. A new block with no runner fails here, as does a
runner whose block is gone, and a block without a language (which could hide a command from this rule).

The README's first lines, the two set-up commands, are not run here (``make test`` from inside the test
suite); ``test_the_setup_commands_say_what_the_makefile_does`` holds what their comments say to the
Makefile and the server's defaults instead.
"""

from __future__ import annotations

import re
from pathlib import Path

from support.readme_blocks import Block, documented_files, find_block, markdown_blocks

from jobpulse_server.platform.config import Config

ROOT = Path(__file__).resolve().parents[2]
HERE = "tests/docs/test_doc_blocks.py"
TOUR = "tests/docs/test_readme_tour.py"
SHOWN_ONLY = "text"

# (file, heading, fence, start of the first line) -> the test file that runs the block.
RUNNERS: dict[tuple[str, str, str, str], str] = {
    ("README.md", "# jobpulse", "bash", "make run "): HERE,
    ("README.md", "### CLI", "console", "$ jobpulse demo"): TOUR,
    ("README.md", "### SDK", "python", "import threading\n\nimport jobpulse\n"): TOUR,
    ("docs/cli.md", "## Errors", "console", "$ jobpulse create --kind k"): TOUR,
    ("docs/sdk.md", "## AsyncWorker", "python", "import asyncio\n"): "tests/e2e/test_async_worker.py",
    ("docs/sdk.md", "## Unique jobs and bulk operations", "python", "import jobpulse\n"): (
        "tests/e2e/test_bulk_actions.py"
    ),
    ("docs/grpcurl.md", "## grpcurl", "console", "$ grpcurl "): "tests/clients/test_grpcurl.py",
    # buf curl: run as written by the tour's test, and over reflection v1 by test_grpcurl.py.
    ("docs/grpcurl.md", "## buf curl", "console", "$ buf curl "): TOUR,
    ("docs/grpcurl.md", "## google-api-core (google.longrunning)", "python", "import grpc\n"): TOUR,
    ("docs/http.md", "## A live progress bar in a page", "html", "<!doctype html>"): (
        "tests/browser/test_readme_progress_page.py"
    ),
    ("docs/http.md", "## From a shell", "console", "$ curl -N "): "tests/docs/test_http_examples.py",
    ("docs/http.md", "## Every RPC as JSON", "console", "$ curl -s "): "tests/docs/test_json_examples.py",
    ("docs/operations.md", "## Webhooks", "python", "from standardwebhooks import"): (
        "tests/webhooks/test_webhooks.py"
    ),
    ("SECURITY.md", "## Verifying a webhook", "python", "from standardwebhooks import"): (
        "tests/webhooks/test_webhooks.py"
    ),
}


def _all_blocks() -> list[Block]:
    return [b for path in documented_files() for b in markdown_blocks(path)]


def test_the_pages_scanned_are_the_readme_the_root_pages_and_the_docs() -> None:
    files = documented_files()
    assert files[:4] == ["README.md", "ARCHITECTURE.md", "SECURITY.md", "bench/README.md"]
    assert {"docs/index.md", "docs/cli.md", "docs/http.md", "docs/reference/configuration.md"} <= set(files)
    assert all((ROOT / f).is_file() for f in files)


def test_every_block_is_run_by_a_test_or_shown_only() -> None:
    blocks = _all_blocks()
    assert len(blocks) >= len(RUNNERS)
    unlabelled = [b.where() for b in blocks if not b.lang]
    assert unlabelled == [], (
        f"give these blocks a language (```console, ```python, ```text, ...): {unlabelled}"
    )

    def runner(block: Block) -> tuple[str, str, str, str]:
        keys = [
            k
            for k in RUNNERS
            if (block.path, block.heading, block.lang) == k[:3] and block.text.startswith(k[3])
        ]
        assert len(keys) == 1, (
            f"{block.where()} is run by no test (or by several: {keys}); run it in a test and name that "
            f"test in RUNNERS, or fence it ```{SHOWN_ONLY} if it is output or a diagram, never run"
        )
        return keys[0]

    claimed = [runner(b) for b in blocks if b.lang != SHOWN_ONLY]
    assert sorted(claimed) == sorted(RUNNERS), "a runner of RUNNERS finds no block (or two)"


def test_each_runner_reads_its_block_from_its_page() -> None:
    for (path, heading, lang, starts), test in RUNNERS.items():
        block = find_block(path, heading, lang, starts)
        source = (ROOT / test).read_text(encoding="utf-8")
        assert f'"{path}"' in source, f"{test} should read {block.where()} from {path}"
        first = starts.splitlines()[0].strip()
        assert first in source, f"{test} should find {block.where()} by its first line {first!r}"


def test_the_setup_commands_say_what_the_makefile_does() -> None:
    """The README's first lines: ``make run`` creates .venv if missing and serves on SQLite (jobpulse.db),
    gRPC on 127.0.0.1:50051, the dashboard on http://127.0.0.1:8080/; ``make test`` runs the suite."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "# jobpulse" and lines[2] == "```bash", "the README starts with the two commands"
    block = find_block("README.md", "# jobpulse", "bash", "make run ")
    assert block.line == 3
    run, test = block.text.splitlines()
    assert run.startswith("make run ") and test.startswith("make test ")

    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    defaults = dict(re.findall(r"^(JOBPULSE_\w+) \?= (\S+)$", makefile, flags=re.M))
    host, port, url = defaults["JOBPULSE_HOST"], defaults["JOBPULSE_PORT"], defaults["JOBPULSE_DATABASE_URL"]
    assert url == "sqlite:///jobpulse.db" and "serves on SQLite (jobpulse.db)" in run
    assert f"gRPC {host}:{port}" in run
    assert f"dashboard http://{Config.host}:{Config.http_port}/" in run
    # make run serves with nothing but those variables (exported) and the defaults of the rest.
    assert "export JOBPULSE_HOST JOBPULSE_PORT JOBPULSE_DATABASE_URL" in makefile
    assert re.search(r"^run: install\n\t\$\(VENV\)/bin/jobpulse-server serve\n", makefile, flags=re.M)
    # The suite in two workers, then tests/faults alone: every test directory in one of the two.
    assert re.search(
        r"^test: install.*\n\t\$\(PY\) -m pytest -n 2 --dist loadfile --ignore=tests/faults\n"
        r"\t\$\(PY\) -m pytest tests/faults\n",
        makefile,
        flags=re.M,
    )
    assert "creates .venv if missing" in run and "creates .venv if missing" in test
    assert re.search(
        r"^\$\(VENV\)/\.installed:.*\n\ttest -x \$\(PY\) \|\| python3 -m venv", makefile, flags=re.M
    )
    # "it prints the dashboard URL": the startup log line.
    app = (ROOT / "service" / "jobpulse_server" / "app" / "wiring.py").read_text(encoding="utf-8")
    assert 'log.info("dashboard on %s/' in app


def test_the_root_pages_link_to_files_that_exist() -> None:
    """The README and the root pages link into docs/ and to each other by relative paths (mkdocs --strict
    checks the links of docs/ only); none of them may point at a file that is not there. The parts the
    site includes (README's "--8<--" sections, ARCHITECTURE.md, SECURITY.md, bench/README.md) carry no
    relative link at all, since the site would resolve it from docs/."""
    link = re.compile(r"\]\(([^)\s]+)\)")
    for page in ("README.md", "ARCHITECTURE.md", "SECURITY.md", "bench/README.md"):
        text = (ROOT / page).read_text(encoding="utf-8")
        for target in link.findall(text):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            path = (ROOT / page).parent / target.split("#")[0]
            assert path.exists(), f"{page} links to {target}, which is not there"
            assert page == "README.md", f"{page} is included in the docs site: no relative link ({target})"
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for section in re.findall(r"--8<-- \[start:(\w+)\]", readme):
        included = readme.split(f"--8<-- [start:{section}]", 1)[1].split(f"--8<-- [end:{section}]", 1)[0]
        relative = [t for t in link.findall(included) if not re.match(r"[a-z]+:", t)]
        assert relative == [], f"README's {section!r} section is included in the site: no relative link"
