"""Calling a component export with its type looked up once.

wasmtime-py's `Func.__call__` asks the engine for the function's type and rebuilds every
parameter and result type on each call: about a third of a trivial call. A type
belongs to the component, so an `ExportCall` looks it up once per instance and then does
exactly what `Func.__call__` does with it (the same conversions, the same cleanup, the
same error path). That needs wasmtime-py's internal FFI layer, which `pyproject.toml` pins
to one major version; where it is missing, calls go through `Func.__call__` instead.
"""

from __future__ import annotations

import ctypes
from typing import Any

from wasmtime import Store
from wasmtime.component import Func

try:  # internals of wasmtime-py 50.x, used exactly as Func.__call__ uses them
    from wasmtime import _ffi as ffi
    from wasmtime.component._enter import enter_wasm

    _FAST = all(
        hasattr(ffi, name)
        for name in (
            "wasmtime_component_val_t",
            "wasmtime_component_func_call",
            "wasmtime_component_val_delete",
        )
    )
except ImportError:  # pragma: no cover - another wasmtime-py layout
    _FAST = False


class ExportCall:
    """A drop-in for an export's `Func`: `call(store, *params)` is `func(store, *params)`,
    without looking the function's type up again. Make one per instance, from the store
    the instance lives in."""

    __slots__ = ("_params", "_result", "_type", "func")

    def __init__(self, func: Func, store: Store) -> None:
        self.func = func
        self._params: list[Any] | None = None
        self._result: Any = None
        if _FAST and hasattr(func, "_func"):
            self._type = func.type(store)  # kept alive as long as the types taken from it
            self._params = [ty for _name, ty in self._type.params]
            self._result = self._type.result

    def __call__(self, store: Store, *params: Any) -> Any:
        types = self._params
        if types is None:
            return self.func(store, *params)
        n = len(params)
        if n != len(types):
            raise TypeError(f"wrong number of parameters: given {n}, expected {len(types)}")
        result_ty = self._result
        param_capi = (ffi.wasmtime_component_val_t * n)()
        lowered = 0
        try:
            for ty, value in zip(types, params, strict=True):
                ty.convert_to_c(store, value, ctypes.pointer(param_capi[lowered]))
                lowered += 1
            result_space = None if result_ty is None else ffi.wasmtime_component_val_t()
            result_ref = None if result_space is None else ctypes.byref(result_space)
            func_ref, context = ctypes.byref(self.func._func), store._context()

            def run() -> Any:
                return ffi.wasmtime_component_func_call(
                    func_ref, context, param_capi, n, result_ref, int(result_ref is not None)
                )

            enter_wasm(run)
            if result_ty is None or result_space is None:
                return None
            return result_ty.convert_from_c(result_space)
        finally:
            for i in range(lowered):
                ffi.wasmtime_component_val_delete(ctypes.byref(param_capi[i]))
