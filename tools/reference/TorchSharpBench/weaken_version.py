"""Marks one version requirement of an ELF64 shared object weak (VER_FLG_WEAK in .gnu.version_r)."""
import struct, sys
path, name = sys.argv[1], sys.argv[2].encode()
data = bytearray(open(path, "rb").read())
assert data[:4] == b"\x7fELF" and data[4] == 2 and data[5] == 1, "not a little-endian ELF64 file"
shoff, = struct.unpack_from("<Q", data, 0x28)
shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
def sh(i):
    return struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
SHT_GNU_verneed = 0x6ffffffe
hits = 0
for i in range(shnum):
    s = sh(i)
    if s[1] != SHT_GNU_verneed:
        continue
    strtab = sh(s[6])[4]  # sh_link: the string table's file offset
    off = s[4]
    for _ in range(s[8]):  # sh_info: number of Verneed entries
        vn_version, vn_cnt, vn_file, vn_aux, vn_next = struct.unpack_from("<HHIII", data, off)
        aoff = off + vn_aux
        for _ in range(vn_cnt):
            vna_hash, vna_flags, vna_other, vna_name, vna_next = struct.unpack_from("<IHHII", data, aoff)
            end = data.index(b"\0", strtab + vna_name)
            if bytes(data[strtab + vna_name:end]) == name:
                struct.pack_into("<H", data, aoff + 4, vna_flags | 0x2)
                hits += 1
            aoff += vna_next
        off += vn_next
if hits == 0:
    sys.exit(f"{path}: no requirement of version {name.decode()}")
open(path, "wb").write(data)
