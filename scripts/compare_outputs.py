"""Compare the outputs of two runs of ``crdetect detect`` (issue #27's check of the redesign): every HDU's data and
header identical, except the new CRVETO plane and CRPROB at the vetoed pixels (the network's probability, kept
since the veto became its own plane); CRMASK identical.

    python scripts/compare_outputs.py BEFORE_DIR AFTER_DIR
"""
import glob
import os
import sys

import numpy as np
from astropy.io import fits

a_dir, b_dir = sys.argv[1], sys.argv[2]
ok = True
for a_path in sorted(glob.glob(os.path.join(a_dir, '*.fits'))):
    b_path = os.path.join(b_dir, os.path.basename(a_path))
    with fits.open(a_path) as a, fits.open(b_path) as b:
        names_b = [(h.name, h.ver) for h in b if h.name != 'CRVETO']
        names_a = [(h.name, h.ver) for h in a]
        if names_a != names_b:
            print('HDU list differs', a_path, names_a, names_b)
            ok = False
            continue
        for h in a:
            hb = b[h.name, h.ver] if h.name not in ('PRIMARY',) else b[0]
            if h.name == 'CRPROB':
                veto = b['CRVETO', h.ver].data != 0 if ('CRVETO', h.ver) in b else np.zeros(h.data.shape, bool)
                da, db = h.data, hb.data
                same = np.array_equal(da[~veto], db[~veto])
                changed = int((da[veto] != db[veto]).sum())
                print(f"{os.path.basename(a_path)} CRPROB[{h.ver}] unvetoed identical: {same}; vetoed px {int(veto.sum())} "
                      f"(prob now kept, {changed} differ from 0)")
                ok &= same
            elif h.data is not None and h.data.size:
                same = np.array_equal(h.data, hb.data) and h.data.dtype == hb.data.dtype
                if not same:
                    print('DATA differs', a_path, h.name, h.ver, int((h.data != hb.data).sum()))
                    ok = False
            keys_a = {k: v for k, v in h.header.items()}
            keys_b = {k: v for k, v in hb.header.items()}
            diff = {k for k in set(keys_a) | set(keys_b) if keys_a.get(k) != keys_b.get(k)}
            if diff:
                print('HEADER differs', os.path.basename(a_path), h.name, sorted(diff)[:10])
                ok = False
print('IDENTICAL (but for CRVETO and vetoed CRPROB)' if ok else 'DIFFERENCES')
