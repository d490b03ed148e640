"""What the Pool benchmarks run, in a module of its own that imports nothing.

A pool preloads it, so that its functions travel by reference. What a
preloaded module imports, the pool's zygote holds, and every worker's fork
copies the page tables of and unmaps on exit: preloading the benchmark
module itself (pytest and all) doubles the zygote and costs each container
about 0.6 ms of CPU here.
"""


def noop(*args):
    return None
