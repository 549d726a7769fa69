"""Pictures of what the models attend to: GAT attention on molecules, NTM memory access over time.

Both write PNG files and never touch matplotlib's global (pyplot) state, so they work headless.
"""

from graphmem.plot.molecule import atom_attention, draw_molecule_attention, plot_molecule_attention
from graphmem.plot.ntm import ntm_copy_run, plot_ntm_run

__all__ = ["atom_attention", "draw_molecule_attention", "ntm_copy_run", "plot_molecule_attention",
           "plot_ntm_run"]
