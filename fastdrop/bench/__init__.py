"""fastdrop's benchmark: time dropout implementations on the same arrays in one process (SPEC §7).

Every figure is a ratio against baselines measured in the same run, on the same array: the
*memory floor*, a C pass that reads and writes every byte of the array once, on as many threads
as the peer it is set beside; NumPy's in-place multiply; the *textbook* NumPy code of the seed
thread; the *best* plain NumPy; PyTorch's dropout when installed.  Beside them, the machine's
streaming bandwidth.  Each row says how far its repeats spread, each target gets a verdict, and
the report ends with how noisy the run was.

The modules, each usable alone:

- `peers`: the implementations compared (`PEERS`, `CHANNEL_PEERS`: one `Peer` entry each) and
  the arrays they run on (`Workspace`);
- `timing`: how one array's peers are timed (batches, interleaved passes, re-measures);
- `noise`: the spread of repeats, descheduled threads, other processes' load, the run's level;
- `records`: the rows of the tables and their ratios;
- `targets`: the speed targets and their verdicts;
- `bandwidth`: the machine's STREAM-like copy and scale bandwidth;
- `runner`: a whole run (`run`), its memory check and its progress;
- `report`: the text and the JSON; `plot`: the PNG; `machine`: what the run ran on;
  `formatting`: how numbers are written.

The command line (``fastdrop bench``) wires these together.
"""
from .bandwidth import BANDWIDTH_BYTES, Bandwidth
from .formatting import format_shape, format_size
from .machine import (available_memory, cpu_model, jax_module, machine_info, simd_path,
                      torch_module)
from .peers import (BACKWARD, BEST_NUMPY, CHANNEL, CHANNEL_DTYPE, CHANNEL_PEERS,
                    CHANNEL_SHAPE, CHANNEL_SHARED_AXES, DTYPES, FASTDROP_MODULE, FORWARD,
                    FORWARD_1_THREAD, MEMORY_FLOOR, MEMORY_FLOOR_1_THREAD, NUMPY_MULTIPLY, PEERS,
                    TEXTBOOK, TORCH_1_THREAD, TORCH_ALL_THREADS, TORCH_MODULE, Peer, Workspace,
                    available_peers)
from .plot import PLOT_INSTALL_HINT, plot, plot_available
from .records import Record
from .report import format_report, machine_line, report
from .runner import (DEFAULT_DTYPES, DEFAULT_KEEP_PROB, DEFAULT_SIZES, Progress, Results,
                     SizeRefused, check_memory, plan, run)
from .timing import MAX_REPEATS, MIN_REPEATS, REPEAT_SECONDS

__all__ = [
    "BACKWARD", "BANDWIDTH_BYTES", "BEST_NUMPY", "Bandwidth", "CHANNEL", "CHANNEL_DTYPE",
    "CHANNEL_PEERS", "CHANNEL_SHAPE", "CHANNEL_SHARED_AXES", "DEFAULT_DTYPES", "DEFAULT_KEEP_PROB",
    "DEFAULT_SIZES", "DTYPES", "FASTDROP_MODULE", "FORWARD", "FORWARD_1_THREAD", "MAX_REPEATS",
    "MEMORY_FLOOR", "MEMORY_FLOOR_1_THREAD", "MIN_REPEATS", "NUMPY_MULTIPLY", "PEERS",
    "PLOT_INSTALL_HINT", "Peer", "Progress", "REPEAT_SECONDS", "Record", "Results",
    "SizeRefused", "TEXTBOOK", "TORCH_1_THREAD", "TORCH_ALL_THREADS", "TORCH_MODULE",
    "Workspace", "available_memory", "available_peers", "check_memory", "cpu_model",
    "format_report", "format_shape", "format_size", "jax_module", "machine_info", "machine_line",
    "plan", "plot", "plot_available", "report", "run", "simd_path", "torch_module",
]
