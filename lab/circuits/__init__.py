"""Circuits: which components cause a behaviour (see lab.circuits.core for the sites)."""
from lab.circuits.core import (CircuitsError, Pair, Sweeps, attribution, dla, induction,
                               make_pair, per_patch_resid, sweep)

__all__ = ["CircuitsError", "Pair", "Sweeps", "attribution", "dla", "induction", "make_pair",
           "per_patch_resid", "sweep"]
