"""Checks before publishing: the common-sql provider's check operators, for one report's day or month.

`ReportTableCheckOperator` and `ReportColumnCheckOperator` are the provider's
`SQLTableCheckOperator` and `SQLColumnCheckOperator` (same check dictionaries, same SQL they
build, same failure: an `AirflowFailException`, so a failed check is not retried while a lost
connection still is) with three things a report needs:

* **parameters**: `table` is a relation, e.g. ``(select ... where day = %(day)s::date) as
  stored``, and the task's templated `parameters` are passed with every query to the
  driver. Values never enter the SQL text.
* **naming the offender**: each relation has a `subject` column (a master as ``cart ABCD12``
  or ``unregistered``, an application as its id: never a name or a RUT). When a check fails,
  the rows that broke it are read and the error says which check and which subject, with
  the row's numbers.
* **an empty relation passes**: a day without masters has nothing to contradict (the
  provider's table check would read MIN() of no rows as NULL and fail to parse it).

They are imported when DAG files are parsed; nothing heavy happens before `execute`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.providers.common.sql.operators.sql import SQLColumnCheckOperator, SQLTableCheckOperator

# Offending rows named per failed check, at most.
MAX_NAMED = 20


class _ParametrizedHook:
    """The operator's hook, running every query with the task's parameters."""

    def __init__(self, hook: Any, parameters: Mapping[str, Any]) -> None:
        self._hook = hook
        self._parameters = parameters

    def get_records(self, sql: str, parameters: Any = None) -> Any:
        return self._hook.get_records(sql, parameters=self._parameters)

    def get_first(self, sql: str, parameters: Any = None) -> Any:
        return self._hook.get_first(sql, parameters=self._parameters)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._hook, name)


class _ReportCheck:
    """What both operators add to the provider's: parameters, and the offenders named."""

    table: str
    parameters: Mapping[str, Any]
    subject: str
    what: str

    def get_db_hook(self) -> Any:
        return _ParametrizedHook(super().get_db_hook(), self.parameters)  # type: ignore[misc]

    def _rows(self, where: str, extra: Mapping[str, Any] | None = None) -> tuple[list[str], list[tuple]]:
        """Column names and rows of the relation where `where` holds (at most MAX_NAMED + 1)."""
        from psycopg import sql

        # The relation and the condition are this task's own SQL (its check statements), not values.
        statement = sql.SQL("select * from {} where {} order by 1 limit {}").format(
            sql.SQL(self.table), sql.SQL(where), sql.Literal(MAX_NAMED + 1)
        )
        hook = super().get_db_hook()  # type: ignore[misc]
        with contextlib.closing(hook.get_conn()) as conn:
            cur = conn.cursor()
            cur.execute(statement, {**self.parameters, **(extra or {})})
            names = [d[0] for d in cur.description]
            return names, cur.fetchall()

    def _describe(self, check: str, where: str, extra: Mapping[str, Any] | None = None) -> str:
        try:
            names, rows = self._rows(where, extra)
        except Exception as exc:  # noqa: BLE001 - the check's own failure is what must be reported
            return f"{check}: failed (its rows could not be read: {type(exc).__name__})"
        if not rows:
            return f"{check}: failed"
        lines = []
        for row in rows[:MAX_NAMED]:
            values = dict(zip(names, row, strict=True))
            subject = values.pop(self.subject, None)
            numbers = ", ".join(f"{k}={v}" for k, v in values.items())
            lines.append(f"{check}: failed for {subject} ({numbers})")
        if len(rows) > MAX_NAMED:
            lines.append(f"{check}: ... and more")
        return "\n".join(lines)

    def _fail(self, failures: list[str]) -> None:
        """Fail the task with the failed checks and their rows. Raised outside the provider's
        exception: its message (the whole query) adds nothing the log's "Record:" line lacks."""
        message = (
            f"{self.what}: check before publishing failed; the published files were left as they were.\n"
            + "\n".join(failures)
        )
        self._raise_exception(message)  # type: ignore[attr-defined]


class ReportTableCheckOperator(_ReportCheck, SQLTableCheckOperator):
    """`SQLTableCheckOperator` over a parametrized relation; a failure names the rows that broke it.

    :param table: the relation, ``(select ...) as name``, with a `subject` column.
    :param checks: ``{name: {"check_statement": "a boolean expression on one row"}}``.
    :param parameters: the query parameters (templated).
    :param subject: the column that names a row in an error (a master, an application).
    :param what: what is being checked, for the error's first line (templated).
    """

    template_fields: Sequence[str] = (*SQLTableCheckOperator.template_fields, "parameters", "what")
    ui_color = "#d9ead3"

    def __init__(
        self,
        *,
        parameters: Mapping[str, Any],
        subject: str = "subject",
        what: str = "",
        retry_on_failure: bool = False,
        **kwargs: Any,
    ) -> None:
        # Each operator's own __init__: Airflow's operator metaclass wraps the class's own one.
        super().__init__(retry_on_failure=retry_on_failure, **kwargs)
        self.parameters = parameters
        self.subject = subject
        self.what = what or self.task_id

    # The provider's template, with a relation of no rows passing (MIN() of nothing is NULL).
    sql_check_template = """
    SELECT '{check_name}' AS check_name, COALESCE(MIN({check_name}), 1) AS check_result
    FROM (SELECT CASE WHEN {check_statement} THEN 1 ELSE 0 END AS {check_name}
          FROM {table} {partition_clause}) AS sq
    """

    def execute(self, context: Any) -> None:
        try:
            super().execute(context)
        except Exception:
            failed = [name for name, values in self.checks.items() if values.get("success") is False]
            if not failed:
                raise
        else:
            return
        self._fail(
            [
                self._describe(name, f"not coalesce(({self.checks[name]['check_statement']}), false)")
                for name in failed
            ]
        )


# What a failed column check's offending rows are: the rows where the bound does not hold.
_COLUMN_BOUNDS = {
    "geq_to": ">=",
    "greater_than": ">",
    "leq_to": "<=",
    "less_than": "<",
}


class ReportColumnCheckOperator(_ReportCheck, SQLColumnCheckOperator):
    """`SQLColumnCheckOperator` over a parametrized relation; a failure names the rows that broke it.

    The offending rows are named for `min`/`max` bounds and `null_check` (the checks these
    reports use); other checks fail the same way, without names.

    :param table: the relation, ``(select ...) as name``, with a `subject` column.
    :param column_mapping: the provider's ``{column: {check: {bound: value}}}``.
    :param parameters: the query parameters (templated).
    :param subject: the column that names a row in an error.
    :param what: what is being checked, for the error's first line (templated).
    """

    template_fields: Sequence[str] = (*SQLColumnCheckOperator.template_fields, "parameters", "what")
    ui_color = "#d9ead3"

    def __init__(
        self,
        *,
        parameters: Mapping[str, Any],
        subject: str = "subject",
        what: str = "",
        retry_on_failure: bool = False,
        **kwargs: Any,
    ) -> None:
        # Each operator's own __init__: Airflow's operator metaclass wraps the class's own one.
        super().__init__(retry_on_failure=retry_on_failure, **kwargs)
        self.parameters = parameters
        self.subject = subject
        self.what = what or self.task_id

    def execute(self, context: Any) -> None:
        try:
            super().execute(context)
        except Exception:
            failed = [
                (column, check, values)
                for column, checks in self.column_mapping.items()
                for check, values in checks.items()
                if values.get("success") is False
            ]
            if not failed:
                raise
        else:
            return
        self._fail([self._describe_column(*f) for f in failed])

    def _describe_column(self, column: str, check: str, values: Mapping[str, Any]) -> str:
        from psycopg import sql

        name = f"{column}_{check}"
        col = sql.Identifier(column).as_string(None)
        if check == "null_check":
            return self._describe(name, f"{col} is null")
        bounds = [(op, values[key]) for key, op in _COLUMN_BOUNDS.items() if key in values]
        if check not in ("min", "max") or not bounds or "tolerance" in values:
            return f"{name}: failed ({values})"
        held = " and ".join(f"{col} {op} %(check_bound_{i})s" for i, (op, _) in enumerate(bounds))
        extra = {f"check_bound_{i}": bound for i, (_, bound) in enumerate(bounds)}
        return self._describe(name, f"{col} is not null and not ({held})", extra)
