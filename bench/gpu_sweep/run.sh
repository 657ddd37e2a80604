#!/bin/bash
# usage: bash .devcarry/run.sh EXP.yaml JOBS.txt NWORKERS CLAIM_SECONDS
set -u
EXPY=$1; JOBS=$2; N=$3; CLAIM=$4
T0=$(date +%s)
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .devcarry/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD/src PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
mkdir -p /tmp/minilm && cp -r .devcarry/minilm/* /tmp/minilm/
python3 -c "
from safetensors.torch import load_file, save_file
t=load_file('.devcarry/minilm/model.safetensors')
save_file({k:(v.float() if v.is_floating_point() else v).contiguous() for k,v in t.items()},'/tmp/minilm/model.safetensors',metadata={'format':'pt'})" || exit 1
mkdir -p /tmp/exp/banking77/data && cp .devcarry/prepared/* /tmp/exp/banking77/data/
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
ADAPTLAB_CACHE=/tmp/cache0 python3 .devcarry/drive.py warm $EXPY || exit 1
echo "setup took $(( $(date +%s) - T0 ))s"
DEADLINE=$(( T0 + CLAIM ))
rm -rf /tmp/claims; mkdir -p /tmp/claims /tmp/logs
RES=$OUT/results.tsv; : > $RES
for i in $(seq 1 $N); do
  cp -r /tmp/cache0 /tmp/cache$i
  WORKER_THREADS=2 ADAPTLAB_CACHE=/tmp/cache$i python3 .devcarry/drive.py work $EXPY $i $JOBS /tmp/claims $DEADLINE $RES > /tmp/logs/w$i.log 2>&1 &
done
wait
echo "total $(( $(date +%s) - T0 ))s"
if [ -n "${PHASEB:-}" ]; then
  python3 .devcarry/pickB.py .devcarry/results1.tsv $RES > /tmp/jobsB.txt; cat /tmp/jobsB.txt
  rm -rf /tmp/claims; mkdir /tmp/claims; DEADLINE=$(( T0 + PHASEB ))
  for i in $(seq 1 $N); do
    WORKER_THREADS=2 ADAPTLAB_CACHE=/tmp/cache$i python3 .devcarry/drive.py work $EXPY $i /tmp/jobsB.txt /tmp/claims $DEADLINE $RES >> /tmp/logs/w$i.log 2>&1 &
  done
  wait; echo "total $(( $(date +%s) - T0 ))s"
fi
grep -h "\[check\]" /tmp/logs/*.log | sort | uniq -c
grep -h -B2 -A12 "Traceback" /tmp/logs/*.log | head -60
(cd /tmp && tar czf $OUT/logs.tgz logs exp/banking77/runs/*/config.yaml exp/banking77/runs/*/eval.json exp/banking77/runs/*/cost.json 2>/dev/null)
echo "==== RESULTS"; sort $RES
