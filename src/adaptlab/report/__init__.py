"""Report: the decision rules (``decide``) that turn measured quality and projected cost into a
recommendation with reasons, and the report that shows it (``build``: ``report.html`` and
``report.md``, from run directories and the experiment folder alone)."""
