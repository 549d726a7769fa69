"""Pictures of what the models attend to: GAT attention on molecules, NTM memory access over time;
and training curves from a run's log.

All write PNG files and never touch matplotlib's global (pyplot) state, so they work headless.
"""

from graphmem.plot.curves import curves_figure, metric_curve, plot_curves, read_metrics
from graphmem.plot.molecule import atom_attention, draw_molecule_attention, plot_molecule_attention
from graphmem.plot.ntm import ntm_copy_run, ntm_task_run, plot_ntm_run

__all__ = ["atom_attention", "curves_figure", "draw_molecule_attention", "metric_curve", "ntm_copy_run",
           "ntm_task_run", "plot_curves", "plot_molecule_attention", "plot_ntm_run", "read_metrics"]
