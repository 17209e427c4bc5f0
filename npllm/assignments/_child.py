"""The child process that runs a student's code for one graded part (``python _child.py WORKDIR``).

The grader (:mod:`npllm.assignments.sandbox`) never imports student code itself.  For each part it
makes a scratch directory holding

    request.json    the student module's name and the calls to make, in order
    inputs.npz      the arrays the calls take (no pickle)
    provided/       pristine copies of the teacher's helper modules (a training loop, test functions)
    submission/     a copy of the student's submission: the working directory and sys.path[0]

and starts this script with a fresh interpreter.  It installs an import blocker for the reference
(``npllm.layers``, ``npllm.models``, ``npllm_kernels`` and the grader itself), imports the student's
module, makes the calls and writes the plain arrays they return to ``outputs.npz`` and one status per
call to ``result.json``.  It judges nothing: every comparison is made by the grader, from these
arrays, in its own process.  This file imports only the standard library and numpy, so nothing of
npllm is loaded before the blocker is in place.

A call is ``{"id", "function", "args", "kwargs", "n_results", "cache"}``.  ``function`` is
``"student:name"`` or ``"provided:module.name"``; an argument is a JSON value, ``{"array": key}``,
``{"cache": key}`` (the cache an earlier call kept), ``{"provided": "module.name"}`` (or
``"module"`` for the module itself) or
``{"student_module": true}``.  With ``"cache": key`` the last result is kept under ``key`` instead of
being saved; the others are saved as ``id.0``, ``id.1``, ...
"""
import importlib.util
import json
import os
import sys
import traceback
from pathlib import Path

BLOCKED = ("npllm.layers", "npllm.models", "npllm_kernels", "npllm.assignments")
REFERENCE_MESSAGE = "the reference may not be used"
SCRATCH_DAMAGED = 75   # the exit status when the student's code deleted this process's scratch files


class ReferenceUsed(BaseException):
    """Raised by the blocker; a BaseException, so a student's ``except Exception`` does not swallow it."""


class ReferenceBlocker:
    """A sys.meta_path finder that refuses the reference and remembers the attempt."""

    def __init__(self):
        self.attempt = None

    def find_spec(self, fullname, path=None, target=None):
        if any(fullname == name or fullname.startswith(name + ".") for name in BLOCKED):
            self.attempt = self.attempt or fullname
            raise ReferenceUsed(f"imported {fullname}: {REFERENCE_MESSAGE}")
        return None


def describe(exc, module_path, function=None):
    """One line for an exception: its type and message and where in the student's file it happened."""
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f"{type(exc).__name__}: {exc.msg} ({Path(exc.filename or '').name}, line {exc.lineno})"
    text = f"{type(exc).__name__}: {exc}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if os.path.realpath(f.filename) == os.path.realpath(module_path)]
    if not frames:
        return text
    if isinstance(exc, NotImplementedError):
        return text if frames[-1].name == function else f"{text} (in {frames[-1].name})"
    return f"{text} ({Path(module_path).name}, line {frames[-1].lineno}, in {frames[-1].name})"


class BadResult(Exception):
    """A result that is not a plain numeric array."""


def as_array(np, name, value):
    """A result as a plain numeric array (Python numbers become 0-d arrays), or a readable BadResult."""
    if isinstance(value, (bool, int, float)) or isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise BadResult(f"{name} must be a numpy array, got {type(value).__name__}")
    if value.dtype.kind not in "biuf":
        raise BadResult(f"{name} must be a numeric array, got dtype {value.dtype}")
    return value if value.flags.c_contiguous else value.copy()   # (ascontiguousarray makes 0-d 1-d)


def main(work):
    work = Path(work)
    request = json.loads((work / "request.json").read_text(encoding="utf-8"))
    submission = work / "submission"
    try:
        import resource   # no core files from a crash in student code
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ImportError, ValueError, OSError):
        pass
    import numpy as np

    inputs = dict(np.load(work / "inputs.npz", allow_pickle=False))
    if request.get("memory_limit"):   # address space: a runaway allocation is a MemoryError, not a swap storm
        try:
            import resource
            resource.setrlimit(resource.RLIMIT_AS, (request["memory_limit"], request["memory_limit"]))
        except (ImportError, ValueError, OSError):
            pass
    blocker = ReferenceBlocker()
    sys.meta_path.insert(0, blocker)
    for name in list(sys.modules):   # nothing of the reference may be reachable through sys.modules
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            del sys.modules[name]
    if sys.path and os.path.realpath(sys.path[0] or ".") == os.path.realpath(os.path.dirname(__file__)):
        del sys.path[0]              # the grader's own directory is not the student's business
    sys.path.insert(0, str(submission))   # the student's module may import its neighbours
    os.chdir(submission)

    provided = {}

    def load(path, name):
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        return module

    for path in sorted((work / "provided").glob("*.py")):
        provided[path.stem] = load(path, f"_provided_{path.stem}")
    module_path = submission / f"{request['module']}.py"
    student, import_error = None, None
    try:
        if not module_path.exists():
            raise FileNotFoundError(f"{module_path.name} not found in the submission")
        student = load(module_path, request["module"])
    except FileNotFoundError as exc:
        import_error = str(exc)
    except SystemExit as exc:
        import_error = f"cannot import {module_path.name}: it called sys.exit({exc.code!r})"
    except ReferenceUsed as exc:
        import_error = f"cannot import {module_path.name}: {exc}"
    except BaseException as exc:
        import_error = f"cannot import {module_path.name}: {describe(exc, module_path)}"

    def resolve_function(name):
        where, _, dotted = name.partition(":")
        if where == "provided":
            module_name, _, attribute = dotted.partition(".")
            return getattr(provided[module_name], attribute) if attribute else provided[module_name]
        function = getattr(student, dotted, None)
        if not callable(function):
            raise LookupError(f"{module_path.name} defines no function {dotted}")
        return function

    caches, statuses, outputs = {}, {}, {}

    def reference_used():
        """The blocked module a call got at, or None: the blocker saw an import, or someone took the
        blocker out of sys.meta_path, or a reference module is loaded all the same."""
        if blocker not in sys.meta_path and not blocker.attempt:
            blocker.attempt = "the reference (the import blocker was removed)"
        loaded = [m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED)]
        if loaded and not blocker.attempt:
            blocker.attempt = loaded[0]
        return blocker.attempt

    class MissingCache(Exception):
        pass

    class Fatal(Exception):
        """Fails the whole part with one line: the module does not import, sys.exit, the reference."""

    def resolve(value):
        if isinstance(value, list):
            return [resolve(item) for item in value]
        if isinstance(value, dict):
            if "array" in value:
                return inputs[value["array"]].copy()
            if "cache" in value:
                if value["cache"] not in caches:
                    raise MissingCache(value["cache"])
                return caches[value["cache"]]
            if "provided" in value:
                return resolve_function("provided:" + value["provided"])
            if "student_module" in value:
                return student
            return {key: resolve(item) for key, item in value.items()}
        return value

    def run(call):
        name = call["function"].partition(":")[2]
        if import_error:
            raise Fatal(import_error)
        if reference_used():   # once the reference was imported, nothing this process computes counts
            raise Fatal(f"imported {blocker.attempt}: {REFERENCE_MESSAGE}")
        try:
            function = resolve_function(call["function"])
            try:
                args, kwargs = resolve(call["args"]), resolve(call.get("kwargs", {}))
            except MissingCache:
                # The forward this call needs failed; a starter backward's own hint says more than that.
                reason = statuses.get(call.get("cache_from"), "it failed")
                try:
                    function(*[None if isinstance(a, dict) and "cache" in a else resolve(a) for a in call["args"]])
                except NotImplementedError as exc:
                    return describe(exc, module_path, name)
                except BaseException:
                    pass
                return f"needs a working {call.get('needs', 'forward')} first: {reason}"
            before = [a.copy() if isinstance(a, np.ndarray) else None for a in args]
            results = function(*args, **kwargs)
            if reference_used():
                raise Fatal(f"imported {blocker.attempt}: {REFERENCE_MESSAGE}")
            for index, (arg, original) in enumerate(zip(args, before) if call.get("inplace_check", True) else []):
                if original is not None and not np.array_equal(arg, original, equal_nan=True):
                    which = call.get("arg_names", [])[index] if index < len(call.get("arg_names", [])) else index
                    return f"{name} modified its input {which} in place (compute new arrays instead)"
            count = call.get("n_results")
            if count is not None:
                if count == 1 and not isinstance(results, tuple):
                    results = (results,)
                if not isinstance(results, tuple):
                    return f"must return {call.get('returns', count)}, got a single {type(results).__name__}"
                if len(results) != count:
                    return f"must return {count} values ({call.get('returns', '')}), got {len(results)}"
                if call.get("cache"):
                    caches[call["cache"]] = results[-1]
                    results = results[:-1]
                names = call.get("result_names") or [f"result {i}" for i in range(len(results))]
                for index, value in enumerate(results):
                    outputs[f"{call['id']}.{index}"] = as_array(np, names[index], value)
            return None
        except Fatal:
            raise
        except ReferenceUsed as exc:
            raise Fatal(str(exc)) from None
        except SystemExit as exc:
            raise Fatal(f"the student code called sys.exit({exc.code!r}): sys.exit is not allowed") from None
        except BadResult as exc:
            return str(exc)
        except BaseException as exc:
            if reference_used():
                raise Fatal(f"imported {blocker.attempt}: {REFERENCE_MESSAGE}") from None
            return describe(exc, module_path, name)

    fatal = None
    for call in request["calls"]:
        try:
            statuses[call["id"]] = run(call)
        except Fatal as exc:
            fatal = str(exc)
            break
    try:
        np.savez(work / "outputs.npz", **outputs)
        (work / "result.json").write_text(json.dumps({"errors": statuses, "fatal": fatal}), encoding="utf-8")
    except OSError:
        os._exit(SCRATCH_DAMAGED)


if __name__ == "__main__":
    main(sys.argv[1])
    os._exit(0)   # skip atexit handlers a student may have registered
