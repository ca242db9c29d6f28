#!/usr/bin/env python3
"""The include graph against the libraries' declared links: no back edge.

src/CMakeLists.txt declares each library of src/ (odmoe_add_library(NAME PUBLIC deps...)).
Every #include "odmoe/Y/..." in src/X/ or include/odmoe/X/ must name X itself or a library X
links (directly or through others); <mpi.h> only where comm is below; Boost.Program_options
and odmoe/cli/ only in the programs (src/cli/, include/odmoe/cli/). Exit status 1 with every
offending line named, 0 when the tree keeps its layers.

usage: check_layering.py SOURCE_DIR
"""
import pathlib
import re
import sys


def declared_links(cmake_text):
    links = {}
    cmake_text = re.sub(r"#[^\n]*", "", cmake_text)
    for m in re.finditer(r"odmoe_add_library\((\w+)(.*?)\)", cmake_text, re.S):
        name, rest = m.group(1), m.group(2)
        links[name] = set(re.findall(r"\bodmoe_(\w+)\b", rest))
    return links


def closure(links, name, seen=None):
    seen = set() if seen is None else seen
    for d in links.get(name, ()):
        if d not in seen:
            seen.add(d)
            closure(links, d, seen)
    return seen


def main(root):
    root = pathlib.Path(root)
    links = declared_links((root / "src" / "CMakeLists.txt").read_text())
    if len(links) < 5:
        print("check_layering: found only %d libraries in src/CMakeLists.txt" % len(links))
        return 1
    problems = []
    checked = 0
    for base in (root / "src", root / "include" / "odmoe"):
        for path in sorted(base.rglob("*")):
            if path.suffix not in (".h", ".cpp", ".cu", ".cuh", ".inc"):
                continue
            layer = path.relative_to(base).parts[0]
            if layer == "cli":
                continue  # the programs may use every library
            if layer not in links:
                problems.append("%s: folder '%s' is no library of src/CMakeLists.txt" % (path.relative_to(root), layer))
                continue
            allowed = closure(links, layer) | {layer}
            for no, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                m = re.match(r'\s*#\s*include\s*[<"]([^>"]+)[>"]', line)
                if not m:
                    continue
                checked += 1
                inc = m.group(1)
                where = "%s:%d" % (path.relative_to(root), no)
                q = re.match(r"odmoe/(\w+)/", inc)
                if q and q.group(1) == "cli":
                    problems.append("%s: %s includes the programs' header %s" % (where, layer, inc))
                elif q and q.group(1) not in allowed:
                    problems.append("%s: %s includes %s, a layer it does not link (links: %s)"
                                    % (where, layer, inc, ", ".join(sorted(allowed - {layer})) or "none"))
                if inc == "mpi.h" and "comm" not in allowed:
                    problems.append("%s: %s includes <mpi.h> but does not link comm" % (where, layer))
                if inc.startswith("boost/program_options"):
                    problems.append("%s: %s includes Boost.Program_options (only the programs may)" % (where, layer))
    for p in problems:
        print(p)
    print("check_layering: %d libraries, %d includes checked, %d problems" % (len(links), checked, len(problems)))
    return 1 if problems or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).resolve().parent.parent))
