"""A matplotlib figure drawn off-screen, without pyplot's global state."""

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def new_figure(figsize):
    """A `Figure` with an Agg canvas attached, ready for `add_subplot` and `savefig`."""
    figure = Figure(figsize=figsize)
    FigureCanvasAgg(figure)
    return figure
