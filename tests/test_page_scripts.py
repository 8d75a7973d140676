"""The page scripts as files: every ES module the dashboard imports is served from the
package, none builds HTML from strings, and all of them are type-checked.

The type check is ``tsc --checkJs --noEmit`` over ``tsconfig.json`` (TypeScript pinned in
``package-lock.json``, installed by ``make lint``); here it runs when that install is
present, and fails under ``CI=true`` when it is not.
"""

from __future__ import annotations

import posixpath
import re
import subprocess
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient
from support.browser import skip_or_fail
from support.paths import ROOT

from tokenrelay.server.web import admin_page_routes, web_routes

WEB = ROOT / "src" / "tokenrelay" / "web"
SCRIPTS = sorted(p for p in WEB.rglob("*.js") if "vendor" not in p.relative_to(WEB).parts)
IMPORT = re.compile(r"^import .* from '(\.{1,2}/[^']+)';$", re.M)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    with TestClient(Starlette(routes=[*web_routes(), *admin_page_routes()])) as http:
        yield http


def test_every_module_the_pages_import_is_served(client: TestClient) -> None:
    seen: set[str] = set()
    todo = ["admin.js", "app.js", "demo.js"]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        response = client.get(f"/static/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"] == "text/javascript; charset=utf-8"
        folder = posixpath.dirname(name)
        todo += [
            posixpath.normpath(posixpath.join(folder, t)) for t in IMPORT.findall(response.text)
        ]
    # The dashboard is more than one module, and every one of them was reached.
    admin_modules = {f"admin/{p.name}" for p in (WEB / "admin").glob("*.js")}
    assert len(admin_modules) >= 5 and admin_modules - {"admin/types.js"} <= seen


def test_no_page_script_builds_html_from_strings() -> None:
    for script in SCRIPTS:
        code = script.read_text()
        for banned in (".innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):
            assert banned not in code, f"{script.name}: {banned}"
        if script.parent.name == "admin":
            assert "eval(" not in code, script.name


def test_every_page_script_is_type_checked() -> None:
    for script in SCRIPTS:
        assert script.read_text().startswith("// @ts-check\n"), script.name
    tsc = ROOT / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        skip_or_fail("TypeScript is not installed (make lint installs it from package-lock.json)")
    done = subprocess.run(
        [str(tsc), "--project", str(ROOT / "tsconfig.json")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
