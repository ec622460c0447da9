"""Pure-Python stand-ins for wendelin.bigfile.file_zodb (same class names
and states), for interop tests."""
from persistent import Persistent
from BTrees.LOBTree import LOBTree
from BTrees.IOBTree import IOBTree

class ZBigFile(Persistent):
    def __init__(self, blksize):
        self.blksize = blksize
        self.blktab = LOBTree()
    def __getstate__(self):
        return (self.blksize, self.blktab)
    def __setstate__(self, state):
        self.blksize, self.blktab = state

class ZBlk0(Persistent):
    def __getstate__(self):
        return self.blkdata
    def __setstate__(self, state):
        self.blkdata = state
ZBlk = ZBlk0

class ZBlk1(Persistent):
    def __getstate__(self):
        return self.chunktab
    def __setstate__(self, state):
        self.chunktab = state

class ZData(Persistent):
    def __getstate__(self):
        return self.data
    def __setstate__(self, state):
        self.data = state

def read_block(f, blk):
    bs = f.blksize
    z = f.blktab.get(blk)
    if z is None:
        return b'\0' * bs
    if isinstance(z, ZBlk0):
        d = z.blkdata
        return d + b'\0' * (bs - len(d))
    buf = bytearray(bs)
    for off, zd in z.chunktab.items():
        buf[off:off + len(zd.data)] = zd.data
    return bytes(buf)

def file_bytes(f, n):
    """The first n bytes of file f."""
    out = bytearray()
    blk = 0
    while len(out) < n:
        out += read_block(f, blk)
        blk += 1
    return bytes(out[:n])
