"""Safe arithmetic: the expression is parsed into an AST and only numbers and arithmetic are interpreted.
Nothing is ever passed to eval.

Invariant: every integer - literal, function argument, intermediate or final result - stays within
±MAX_MAGNITUDE, and a power is refused before it is computed when its result would not, so no step costs
more than a multiplication of two 1,000-bit numbers. Complex results are refused. It still runs in a
child process (see `chat.tools.sandbox`): the bound on time is the process, not this arithmetic."""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable
from typing import Any

from chat.tools.errors import ToolError

MAX_EXPRESSION = 500
MAX_EXPONENT = 10_000
MAX_MAGNITUDE = 10**300
MAX_ROUND_DIGITS = 330  # round(x, n): beyond ±330 digits, no float or bounded int changes
_MAX_BITS = MAX_MAGNITUDE.bit_length()

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "abs": abs,
    "round": round,
    "floor": math.floor,
    "ceil": math.ceil,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}


def calculate(arguments: dict[str, Any]) -> str:
    """The calculator tool's answer to `{"expression": ...}` (runs in the tool sandbox)."""
    expression = str(arguments.get("expression", ""))
    result = evaluate(expression)
    if isinstance(result, float) and result.is_integer() and abs(result) < 1e15:
        result = int(result)
    return f"{expression} = {result}"


def evaluate(expression: str) -> int | float:
    if len(expression) > MAX_EXPRESSION:
        raise ToolError(f"The expression is longer than {MAX_EXPRESSION} characters.")
    try:
        # People (and models) write ^ for powers; Python's ^ is xor, which is not arithmetic here.
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"Not an arithmetic expression: {exc.msg}.") from exc
    except (RecursionError, MemoryError) as exc:
        raise ToolError("The expression is nested too deeply.") from exc
    try:
        result = _eval(tree.body)
    except ZeroDivisionError as exc:
        raise ToolError("Division by zero.") from exc
    except (OverflowError, ValueError) as exc:
        raise ToolError(f"Cannot compute that: {exc}.") from exc
    except RecursionError as exc:
        raise ToolError("The expression is nested too deeply.") from exc
    return _checked(result)


def _checked(value: Any) -> Any:
    """`value` if it is a number within bounds, else a ToolError saying why not."""
    if isinstance(value, complex):
        raise ToolError("The result is a complex number; this calculator works with real numbers only.")
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ToolError("The result is not a number.")
    if isinstance(value, int) and abs(value) > MAX_MAGNITUDE:
        raise ToolError("The result is too large (more than 300 digits).")
    if isinstance(value, float) and math.isinf(value):
        raise ToolError("The result is too large.")
    return value


def _power(base: Any, exponent: Any) -> Any:
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"Exponents above {MAX_EXPONENT} are not supported.")
    # An integer power is exact, so its size is known beforehand: refuse it before computing it.
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        if (abs(base).bit_length() - 1) * exponent > _MAX_BITS:
            raise ToolError("The result is too large (more than 300 digits).")
    return operator.pow(base, exponent)


def _call(name: str, args: list[Any]) -> Any:
    if name == "round" and len(args) == 2:
        digits = args[1]
        if not isinstance(digits, int):
            raise ToolError("round() takes a whole number of digits.")
        if abs(digits) > MAX_ROUND_DIGITS:
            raise ToolError(f"round() takes at most {MAX_ROUND_DIGITS} digits either way.")
    try:
        return _FUNCTIONS[name](*args)
    except TypeError as exc:
        raise ToolError(f"Wrong arguments for {name}(): {exc}.") from exc


def _eval(node: ast.AST) -> Any:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return _checked(node.value)
    if isinstance(node, ast.Name) and node.id in _CONSTANTS:
        return _CONSTANTS[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow):
            return _checked(_power(left, right))
        return _checked(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _checked(_UNARY[type(node.op)](_eval(node.operand)))
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _FUNCTIONS
        and not node.keywords
    ):
        return _checked(_call(node.func.id, [_eval(arg) for arg in node.args]))
    raise ToolError(f"Unsupported element in the expression: {ast.unparse(node)!r}.")
