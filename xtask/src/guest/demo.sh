# The `cargo xtask vm-run` demonstration. Runs as root, outside any domain, like a supervisor.
# First a task started with `bulkhead exec` tries to read this supervisor's environment and
# memory; the same reads from outside a domain succeed. Then, where the VM has Python, the
# token broker with a real Airflow task (tests/airflow/run_task.py).
set -u
# /proc/<pid>/environ shows a process's *initial* environment, so `export` is not enough:
# re-exec with the secret in it, as a supervisor started with it would have.
if [ -z "${DEMO_SECRET:-}" ]; then
    DEMO_SECRET="jwt-signing-key-of-the-supervisor" exec sh "$0"
fi
sup=$$
addr=$(head -n 1 /proc/$sup/maps | cut -d- -f1)
echo "== bulkhead demo =="
echo "supervisor: pid $sup, holds DEMO_SECRET in its environment; first mapping at 0x$addr"
echo
echo "-- control: a process outside any domain reads the supervisor"
sh -c "tr '\0' '\n' < /proc/$sup/environ | grep DEMO_SECRET" && echo "   environ: READ (outside a domain bulkhead allows it)"
cat /proc/$sup/cmdline >/dev/null && echo "   cmdline: READ"
n=$(sh -c "dd if=/proc/$sup/mem bs=4096 skip=\$((0x$addr / 4096)) count=1 2>/dev/null | wc -c")
echo "   mem: read $n bytes at 0x$addr"
echo
echo "-- the task: started with 'bulkhead exec --label demo-task', same reads"
bulkhead exec --label demo-task -- sh -c "
  echo \"   task pid \$\$ sealed into domain \$BULKHEAD_DOMAIN\"
  if tr '\0' '\n' < /proc/$sup/environ | grep DEMO_SECRET; then echo '   environ: READ (bulkhead failed!)'; exit 1; fi
  echo '   environ: refused'
  if cat /proc/$sup/cmdline >/dev/null 2>&1; then echo '   cmdline: READ (bulkhead failed!)'; exit 1; fi
  echo '   cmdline: refused (world-readable to Unix permissions, not across domains)'
  if dd if=/proc/$sup/mem bs=4096 skip=\$((0x$addr / 4096)) count=1 2>&1 >/dev/null | grep -q 'not permitted'; then
    echo '   mem: refused (Operation not permitted)'
  else
    echo '   mem: READ (bulkhead failed!)'; exit 1
  fi
"
task=$?
echo
echo "-- the agent's log lines for it"
sleep 0.5
grep -E "sealed|denied" /tmp/agent.log | sed 's/^/   /'
echo
echo "-- the kernel's refusals, as the audit trail records them"
grep '"label":"demo-task"' /var/log/bulkhead/audit.jsonl | sed 's/^/   /'
echo
airflow=0
if [ -x /opt/airflow-venv/bin/python ]; then
    echo "-- the token broker and a real Airflow task"
    echo "   Airflow 3.3's task SDK supervisor runs a DAG task through bulkhead_airflow's coordinator:"
    echo "   it registers the task with its workload token (signed by the executor's key), the task"
    echo "   starts sealed by 'bulkhead exec', and the broker mints its execution tokens to the"
    echo "   supervisor only. The Execution API (Airflow's own, in-process) trusts only the broker's"
    echo "   keys. The task attacks; a process outside every domain repeats its reads."
    echo "   (Under emulation this takes a few minutes.)"
    BULKHEAD_TEST_SUPERVISOR_SECRET=supervisor-only HOME=/root \
        /opt/airflow-venv/bin/python /include/airflow/run_task.py --explain \
        --work /tmp/airflow-demo --bulkhead /bin/bulkhead --socket /run/bulkhead/bulkhead.sock \
        --executor-key /srv/bulkhead-test/keys/executor.key \
        --workload-jwks /srv/bulkhead-test/workload-jwks.json \
        --airflow-cfg /srv/bulkhead-test/airflow/airflow.cfg --broker-keys /var/lib/bulkhead/keys \
        --public-file /srv/bulkhead-test/public.cfg --marker BULKHEAD_TEST_SUPERVISOR_SECRET \
        --integration /include >/tmp/airflow-demo.out 2>/tmp/airflow-demo.log
    airflow=$?
    # Airflow's own log (stdout and stderr) stays in the files; the account follows its marker.
    sed -n '/^BULKHEAD-AIRFLOW-EXPLAIN$/,$p' /tmp/airflow-demo.out | sed 1d
    if [ "$airflow" -ne 0 ]; then
        cat /tmp/airflow-demo.out /tmp/airflow-demo.log | grep -v '^BULKHEAD-AIRFLOW-RESULT' |
            tail -n 20 | sed 's/^/   log| /'
    fi
else
    echo "-- no Python in this VM (\`cargo xtask setup\` builds the Airflow venv): broker part skipped"
fi
echo
if [ "$task" -eq 0 ] && [ "$airflow" -eq 0 ]; then
    echo "demo: the task was refused every read; the outside controls read"
else
    echo "demo: FAILED"
fi
[ "$task" -eq 0 ] && [ "$airflow" -eq 0 ]
