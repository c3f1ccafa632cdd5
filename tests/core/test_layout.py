"""The library's shape: no import circle, a core without plotting or widget libraries, family
knowledge and hook names each in one place."""

import ast
import re
import subprocess
import sys
from pathlib import Path

LIB = Path(__file__).resolve().parents[2] / "lib"
PACKAGE = LIB / "lmscope"
MODULES = sorted(PACKAGE.rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(LIB).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def lmscope_imports(path: Path) -> set[str]:
    """Every lmscope module that ``path`` imports, at module level or inside a function
    (imports for type checkers only, under ``if TYPE_CHECKING:``, never run and are left out)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lmscope")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lmscope"):
            found.add(node.module)
            known = {module_name(p) for p in MODULES}
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in known}
    return found


def test_no_import_circle():
    graph = {module_name(p): lmscope_imports(p) for p in MODULES}
    for name, deps in graph.items():  # importing a.b.c also runs a and a.b
        graph[name] = {d for dep in deps for d in _with_parents(dep)} - {name}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node, path):
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1 and not node.startswith(dep + "."):  # a package importing its own parent is fine
                raise AssertionError("import circle: " + " -> ".join(path + [node, dep]))
            if dep not in state:
                visit(dep, path + [node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(1, len(parts))]


def test_core_imports_without_plotting_or_widget_libraries():
    """With matplotlib and ipywidgets blocked, ``lmscope.core`` (and the top-level package) import."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('matplotlib', 'ipywidgets'):\n"
        "            raise ImportError('blocked: ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import lmscope, lmscope.core\n"
        "from lmscope.core import ModelView, load_model, hook_name, logit_lens\n"
        "assert not [m for m in sys.modules if m.split('.')[0] in ('matplotlib', 'ipywidgets')]\n"
        "print('ok')\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


# Module names and model types that only the family table may know.
PATH_WORDS = {
    "self_attn", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "c_attn", "c_proj",
    "c_fc", "query_key_value", "dense_h_to_4h", "dense_4h_to_h", "input_layernorm", "post_attention_layernorm",
    "embed_tokens", "lm_head", "Conv1D", "ln_1", "ln_2", "ln_f", "wte", "gpt_neox", "transformer", "encoder",
    "qkv_proj", "gate_up_proj", "q_norm", "k_norm", "pre_feedforward_layernorm", "post_feedforward_layernorm",
    "attn_logit_softcapping", "final_logit_softcapping",
}
MODEL_TYPES = {"bert", "gpt2", "llama", "qwen2", "mistral", "gpt_neox", "gemma2", "gemma3_text", "gemma3", "qwen3", "phi3",
               "olmo2", "smollm3"}


def code_words(path: Path) -> list[tuple[int, str]]:
    """(line, word) for every identifier, attribute and string constant of the code, docstrings left out."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    words = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            words.append((node.lineno, node.attr))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
            if node.value in MODEL_TYPES:
                words.append((node.lineno, node.value))
            words += [(node.lineno, part) for part in re.split(r"[.\s]", node.value) if part in PATH_WORDS]
    return words


def test_family_knowledge_lives_only_in_the_family_table():
    offenders = [f"{p.relative_to(LIB)}:{n}: {w}" for p in MODULES if p != PACKAGE / "core" / "families.py"
                 for n, w in code_words(p) if w in PATH_WORDS or w in MODEL_TYPES]
    assert offenders == [], "family knowledge outside lmscope.core.families:\n" + "\n".join(offenders)


def test_hook_names_are_built_in_one_place():
    pattern = re.compile(r"""f["']blocks\.\{""")
    offenders = [f"{p.relative_to(LIB)}:{n}" for p in MODULES if p != PACKAGE / "core" / "hooks.py"
                 for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert offenders == [], "hand-written hook names (use lmscope.core.hook_name): " + ", ".join(offenders)
