"""The instruction sets the CPU kernels are compiled for, one library each.

Read by ``setup.py`` (which builds ``focal_plugin._C_cpu_<isa>`` for each) and
by :mod:`focal_plugin.ops.extension` (which loads the best one the CPU runs),
so the two never disagree. Torch-free: ``setup.py`` reads it before anything
is built.
"""

# Best first: a CPU that runs one of them runs every one after it. 'default'
# is the portable library, built everywhere.
CPU_LIBRARIES = ('avx512', 'avx2', 'default')
