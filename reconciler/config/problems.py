"""Config problems, each located at a file, line and column, and the error that carries them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ConfigProblem:
    file: Path | None
    line: int | None  # 1-based
    column: int | None  # 1-based
    field: str  # in words, e.g. "policies → 2nd (archive-old-ct) → select → older_than"
    message: str

    @property
    def location(self) -> str:
        """``file:line:column``, as far as known."""
        parts = [_display(self.file)] if self.file else []
        parts += [str(n) for n in (self.line, self.column) if n is not None]
        return ":".join(parts)

    def __str__(self) -> str:
        return ": ".join(part for part in (self.location, self.field, self.message) if part)


class ConfigError(Exception):
    """Every problem found in a config, sorted by file and line; str() gives one per line."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = sorted(problems, key=_problem_order)
        super().__init__("\n".join(str(problem) for problem in self.problems))


def file_problem(file: Path, message: str) -> ConfigProblem:
    return ConfigProblem(file, None, None, "", message)


def _problem_order(problem: ConfigProblem) -> tuple[str, int, int]:
    return (str(problem.file or ""), problem.line or 0, problem.column or 0)


def _display(path: Path) -> str:
    """Paths under the working folder are shown relative to it, as compilers do."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
