import sys, re
NAMES = set(re.findall(r'^  (\w+):', open('.devcarry/exp2.yaml').read(), re.M))
# results files: previous call's + this phase; choose top setfit k10 settings (seed 42), not def
acc = {}
for path in sys.argv[1:]:
    for line in open(path):
        p = line.rstrip("\n").split("\t")
        if len(p) > 1 and p[0].startswith("s10_") and not p[0][-3:] in ("_s1", "_s2") and p[0] != "s10_bf16":
            try: acc[p[0]] = float(p[1])
            except ValueError: pass
others = sorted((a, n) for n, a in acc.items() if n != "s10_def" and n + "_s1" in NAMES and "s8_" + n[4:] in NAMES)[::-1][:3]
top = [n[4:] for a, n in others]
print("# top:", others, file=sys.stderr)
jobs = ["s8_def_s1", "s8_def_s2"]
for c in top:
    jobs += [f"s10_{c}_s1", f"s10_{c}_s2"]
for c in top[:2]:
    jobs += [f"s8_{c}", f"s8_{c}_s1", f"s8_{c}_s2"]
print("\n".join(jobs))
