r"""Modern Hopfield layers (Ramsauer et al. 2020): one association function, three faces.

* :func:`hopfield_update` - the update
  :math:`\xi \leftarrow X \operatorname{softmax}(\beta X^\top \xi)`, the attention
  core's dense layout with a :math:`\beta`-scaled dot score;
* :class:`Hopfield` - associate a state set with a stored set (learned projections, heads);
* :class:`HopfieldPooling` - learned state patterns pool a set or each graph of a batch;
* :class:`HopfieldLayer` - learned stored patterns act as a lookup table.
"""

from graphmem.nn.hopfield.hopfield import Hopfield
from graphmem.nn.hopfield.lookup import HopfieldLayer
from graphmem.nn.hopfield.pooling import HopfieldPooling
from graphmem.nn.hopfield.update import hopfield_update

__all__ = ["Hopfield", "HopfieldLayer", "HopfieldPooling", "hopfield_update"]
