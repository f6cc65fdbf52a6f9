"""`calculator`: safe arithmetic over numbers, evaluated from Python's `ast`, never `eval`.

Allowed: numbers, + - * / // % **, unary minus/plus, parentheses. Anything else (names,
calls, attributes, strings, comparisons, `__import__`) is refused with the construct named.
Cost is bounded: the expression's length and nesting depth, the size of an exponent's
result and of every intermediate integer are capped, so one call cannot stall the service.
"""
from __future__ import annotations

import ast
import math
import operator

from inloop.services.contract.errors import ToolError
from inloop.services.contract.tool_schema import MAX_EXPRESSION_CHARS

MAX_DEPTH = 300  # above the 250 operators 500 characters can hold; far below the recursion limit
MAX_INT_BITS = 4096  # about 1233 decimal digits: any result a task needs, none that hurts

_BINARY = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//",
           ast.Mod: "%", ast.Pow: "**"}


def _check_power(base: float, exponent: float) -> None:
    """Refuse a power whose result would be huge, before computing it."""
    if abs(base) <= 1 or exponent <= 0:
        return  # the magnitude cannot grow (negative exponents give floats <= 1)
    if exponent * math.log2(abs(base)) > MAX_INT_BITS:
        raise ToolError(f"{base!r} ** {exponent!r} is too large (results are capped at "
                        f"{MAX_INT_BITS} bits, about {int(MAX_INT_BITS * math.log10(2))} digits)")


def _check_size(value: float) -> float:
    if isinstance(value, complex):  # e.g. (-8) ** 0.5
        raise ToolError("the result is not a real number (a fractional power of a negative number)")
    if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
        raise ToolError(f"an intermediate result exceeds {MAX_INT_BITS} bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError("the result is not a finite number (overflow)")
    return value


def _eval(node: ast.AST, depth: int = 0):
    if depth > MAX_DEPTH:
        raise ToolError(f"the expression nests deeper than {MAX_DEPTH} levels")
    if isinstance(node, ast.Expression):
        return _eval(node.body, depth + 1)
    if isinstance(node, ast.Constant):
        # bool is an int subclass, and True + True should not quietly be 2.
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return node.value
        raise ToolError(f"only numbers are allowed, not {node.value!r}")
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand, depth + 1))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left, depth + 1), _eval(node.right, depth + 1)
        if isinstance(node.op, ast.Pow):
            _check_power(left, right)
        try:
            return _check_size(_BINARY[type(node.op)](left, right))
        except ZeroDivisionError:
            raise ToolError(f"division by zero ({_SYMBOL[type(node.op)]} 0)") from None
        except OverflowError:
            raise ToolError("the result is too large for a floating-point number") from None
    raise ToolError(f"{_describe(node)} not allowed: use numbers, + - * / // % ** and parentheses")


def _describe(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return f"names ({node.id!r}) are"
    if isinstance(node, ast.Call):
        return "function calls are"
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        return f"the operator {type(node.op).__name__} is"
    return f"{type(node).__name__} is"


def evaluate(expression: str):
    """The value of an arithmetic expression (int or float); ToolError when refused."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"the expression is {len(expression)} characters; the limit is {MAX_EXPRESSION_CHARS}")
    # People (and models) write x and ^; Python's ** is what they mean. ^ is never xor here.
    text = expression.strip().replace("×", "*").replace("÷", "/").replace("^", "**")
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"cannot parse {expression!r} as arithmetic: {exc.msg}") from None
    return _eval(tree)


def calculator(state, expression: str) -> dict:
    """Evaluate arithmetic; a float that is a whole number is reported as an int."""
    value = evaluate(expression)
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        value = int(value)
    return {"expression": expression, "result": value}
