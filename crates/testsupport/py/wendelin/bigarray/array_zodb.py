from persistent import Persistent
import numpy as np
class ZBigArray(Persistent):
    def __getstate__(self): return self.state
    def __setstate__(self, st): self.state = st
def to_numpy(a):
    from wendelin.bigfile.file_zodb import file_bytes
    d, slots = a.state
    dt = d['_dtype']; shape = tuple(d['_shape']); order = d.get('_order', 'C')
    n = int(np.prod(shape)) * dt.itemsize
    return np.frombuffer(file_bytes(slots['zfile'], n), dtype=dt).reshape(shape, order=order)
