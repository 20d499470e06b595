"""simo_lite benchmarks: one module per measured section, a driver, and the results document.

- :mod:`benchmarks.common`        shared helpers (environment, atomic JSON, Markdown) and the time budgets;
- :mod:`benchmarks.scenes_rate`   SIMO-lite Scenes rendering rate (``scenes`` section of bench.json);
- :mod:`benchmarks.course_time`   wall-clock of every course notebook against its budget (``course``);
- :mod:`benchmarks.merging_cost`  time and peak memory of the merges on a ViT-B-sized encoder (``merging``);
- :mod:`benchmarks.head_realign`  head realignment with cached features against the encoder every step
  (``head_realign``);
- :mod:`benchmarks.table4`        the paper's Table 4 (cost against joint MTL) from a course run (``table4``);
- :mod:`benchmarks.bench`         the driver: runs the sections, prints them, writes ``runs/bench/bench.json``;
- :mod:`benchmarks.render_results` ``docs/results.md`` from a run's results, bench.json and
  ``benchmarks/paper_tables.json`` (the paper's numbers, quoted once).

Every section module has ``run(...) -> dict`` (the section as stored in bench.json) and
``markdown(section) -> str``. Run the scripts as ``python benchmarks/bench.py`` or
``python -m benchmarks.bench`` (likewise ``render_results``).
"""
