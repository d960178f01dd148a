import functools, os, time, inspect
from verl_resrl._import_hook import when_imported
LOG = f"/tmp/tl/{os.getpid()}.log"
def log(msg):
    with open(LOG, "a") as f:
        f.write(f"{time.time():.4f} {os.getpid()} {msg}\n")
def wrap(cls, name, label=None):
    orig = getattr(cls, name)
    label = label or f"{getattr(cls,'__name__',cls)}.{name}"
    if inspect.iscoroutinefunction(orig):
        @functools.wraps(orig)
        async def w(*a, **k):
            log(f"B {label}")
            try: return await orig(*a, **k)
            finally: log(f"E {label}")
    else:
        @functools.wraps(orig)
        def w(*a, **k):
            log(f"B {label}")
            try: return orig(*a, **k)
            finally: log(f"E {label}")
    setattr(cls, name, w)
def p_tq(m):
    c = m.AgentLoopWorkerTQ.__ray_metadata__.modified_class.__mro__[1]
    for n in ["generate_sequences", "_run_prompt", "_agent_loop_postprocess"]:
        wrap(c, n)
    import verl.experimental.agent_loop.agent_loop as al
    for n in ["_run_agent_loop", "_compute_score"]:
        wrap(al.AgentLoopWorker, n)
    import transfer_queue as tq
    for n in ["async_kv_put", "async_kv_batch_put"]:
        wrap(tq, n)
def p_rb(m):
    wrap(m.ReplayBuffer, "sample"); wrap(m.ReplayBuffer, "_sync_metadata_from_transfer_queue"); wrap(m.ReplayBuffer, "_materialize_batch")
def p_tb(m):
    for n in ["prepare_step", "on_sample_begin", "_compute_old_log_prob"]:
        if hasattr(m.PPOTrainer if hasattr(m,'PPOTrainer') else object, n): pass
def register():
    when_imported("verl.trainer.ppo.v1.agent_loop_tq", p_tq)
    when_imported("verl.trainer.ppo.v1.replay_buffer", p_rb)
