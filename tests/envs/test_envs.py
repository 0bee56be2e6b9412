"""The BatchedEnv contract for procgen (real games), gymnasium and the memory task."""
import gymnasium
import numpy as np
import pytest

from metarl.envs import (ENV_KINDS, EXPLORATION_MODE_GAMES, MEMORY_MODE_GAMES, PROCGEN_GAMES, BatchedEnv,
                         GymnasiumEnv, MemoryEnv, ProcgenEnv, ProcgenGymnasiumEnv, make_env)


def run_and_check(env: BatchedEnv, steps: int, seed: int = 0, until_each_task=None):
    """Random actions for ``steps`` steps (or until every task has ``until_each_task`` episodes, at most
    ``steps``); checks shapes/dtypes every step and that the env's records equal a count kept here.
    Returns (records, obs after reset, list of (step, slot, obs) for every done)."""
    rng = np.random.default_rng(seed)
    obs0 = env.reset(seed=seed)
    assert obs0.shape == (env.num_envs, *env.obs_shape) and obs0.dtype == env.obs_dtype
    returns = np.zeros(env.num_envs)
    lengths = np.zeros(env.num_envs, dtype=int)
    records, dones = [], []
    for t in range(steps):
        obs, reward, done, episodes = env.step(rng.integers(0, env.num_actions, env.num_envs))
        assert obs.shape == (env.num_envs, *env.obs_shape) and obs.dtype == env.obs_dtype
        assert reward.shape == (env.num_envs,) and reward.dtype == np.float32
        assert done.shape == (env.num_envs,) and done.dtype == np.bool_
        returns += reward
        lengths += 1
        expected = []
        for i in np.flatnonzero(done):
            task_id = int(env.task_ids[i])
            expected.append({"task": env.task_names[task_id], "task_id": task_id, "slot": int(i),
                             "return": pytest.approx(returns[i]), "length": int(lengths[i])})
            dones.append((t, int(i), obs[i].copy()))
            returns[i], lengths[i] = 0.0, 0
        assert episodes == expected
        records.extend(episodes)
        if until_each_task and all(sum(r["task"] == name for r in records) >= until_each_task
                                   for name in env.task_names):
            break
    return records, obs0, dones


# -- procgen ---------------------------------------------------------------------------------------
def test_procgen_constants_match_procgen():
    import procgen.env

    assert PROCGEN_GAMES == tuple(procgen.env.ENV_NAMES)
    assert set(EXPLORATION_MODE_GAMES) == set(procgen.env.EXPLORATION_LEVEL_SEEDS)


def test_procgen_single_game_steps_and_auto_resets():
    with ProcgenEnv("bigfish", 3, num_levels=1, seed=0) as env:
        assert env.obs_shape == (64, 64, 3) and env.obs_dtype == np.uint8 and env.num_actions == 15
        assert env.task_names == ["bigfish"] and env.task_ids.tolist() == [0, 0, 0]
        records, obs0, dones = run_and_check(env, 600, until_each_task=2)
    assert len(records) >= 2 and all(r["task"] == "bigfish" for r in records)
    # one level only: the obs returned with done is that level's first frame again (auto-reset, same step)
    for _, slot, obs in dones:
        np.testing.assert_array_equal(obs, obs0[slot])


def test_procgen_as_a_gymnasium_env():
    # the single-env form RLlib's env runners vectorise: gymnasium's own checker, then whole episodes
    from gymnasium.utils.env_checker import check_env

    env = ProcgenGymnasiumEnv({"game": "bigfish", "num_levels": 1, "seed": 0})
    check_env(env, skip_render_check=True)
    assert env.observation_space.shape == (64, 64, 3) and env.action_space.n == 15
    first, _ = env.reset(seed=3)
    rng, episodes, steps, total = np.random.default_rng(0), 0, 0, 0.0
    while episodes < 2 and steps < 2000:
        obs, reward, terminated, truncated, _ = env.step(int(rng.integers(15)))
        assert env.observation_space.contains(obs) and not truncated
        steps, total = steps + 1, total + reward
        if terminated:
            episodes += 1
            again, _ = env.reset()  # the next level was already started: its first frame, no rebuild
            np.testing.assert_array_equal(again, first)  # one level only
    assert episodes == 2
    env.close()


def test_procgen_two_games_split_and_report_per_task():
    with ProcgenEnv(["bigfish", "coinrun"], 4, num_levels=1, seed=1) as env:
        assert env.task_names == ["bigfish", "coinrun"] and env.task_ids.tolist() == [0, 0, 1, 1]
        records, obs0, dones = run_and_check(env, 2000, seed=1, until_each_task=1)
    assert {r["task"] for r in records} == {"bigfish", "coinrun"}
    for r in records:
        assert r["task_id"] == env.task_names.index(r["task"]) and r["length"] >= 1
    for _, slot, obs in dones:
        np.testing.assert_array_equal(obs, obs0[slot])


def test_procgen_uneven_split_and_determinism():
    a = ProcgenEnv(["maze", "heist", "miner"], 5, seed=3)
    b = ProcgenEnv(["maze", "heist", "miner"], 5, seed=3)
    assert a.task_ids.tolist() == [0, 0, 1, 1, 2]
    np.testing.assert_array_equal(a.reset(seed=3), b.reset(seed=3))
    rng = np.random.default_rng(0)
    for _ in range(50):
        actions = rng.integers(0, 15, 5)
        (oa, ra, da, _), (ob, rb, db, _) = a.step(actions), b.step(actions)
        np.testing.assert_array_equal(oa, ob)
        np.testing.assert_array_equal(ra, rb)
        np.testing.assert_array_equal(da, db)
    # reset(seed) after stepping restarts the same way as a fresh env with that seed
    c = ProcgenEnv(["maze", "heist", "miner"], 5, seed=9)
    np.testing.assert_array_equal(a.reset(seed=9), c.reset())
    for env in (a, b, c):
        env.close()


def test_procgen_memory_mode_is_checked_before_procgen_runs(monkeypatch):
    import procgen

    def must_not_be_called(*args, **kwargs):
        raise AssertionError("procgen was called before the mode was validated")

    monkeypatch.setattr(procgen, "ProcgenGym3Env", must_not_be_called)
    with pytest.raises(ValueError, match="memory.*bigfish.*caveflyer, dodgeball, heist, jumper, maze, miner"):
        ProcgenEnv("bigfish", 2, distribution_mode="memory")
    with pytest.raises(ValueError, match="coinrun"):
        ProcgenEnv(["maze", "coinrun"], 2, distribution_mode="memory")
    with pytest.raises(ValueError, match="extreme.*chaser, dodgeball, leaper, starpilot"):
        ProcgenEnv("coinrun", 2, distribution_mode="extreme")
    with pytest.raises(ValueError, match="exploration"):
        ProcgenEnv("bigfish", 2, distribution_mode="exploration")
    with pytest.raises(ValueError, match="easy, hard, extreme, memory, exploration"):
        ProcgenEnv("maze", 2, distribution_mode="medium")


def test_procgen_memory_mode_works_for_maze():
    assert "maze" in MEMORY_MODE_GAMES
    with ProcgenEnv("maze", 2, distribution_mode="memory", seed=0) as env:
        records, _, _ = run_and_check(env, 20)
    assert isinstance(records, list)


def test_procgen_argument_errors():
    with pytest.raises(ValueError, match="unknown procgen game 'pong'.*bigfish.*starpilot"):
        ProcgenEnv("pong", 2)
    with pytest.raises(ValueError, match="num_envs"):
        ProcgenEnv(["bigfish", "coinrun", "maze"], 2)
    with pytest.raises(ValueError, match="more than once"):
        ProcgenEnv(["maze", "maze"], 2)
    with pytest.raises(ValueError, match="start_level"):
        ProcgenEnv("maze", 2, distribution_mode="exploration", num_levels=10)


# -- gymnasium -------------------------------------------------------------------------------------
def test_cartpole_matches_single_envs_and_auto_resets():
    n, seed = 3, 5
    env = GymnasiumEnv("CartPole-v1", n, seed=seed)
    assert env.obs_shape == (4,) and env.obs_dtype == np.float32 and env.num_actions == 2
    assert env.task_names == ["CartPole-v1"]
    refs = [gymnasium.make("CartPole-v1") for _ in range(n)]
    obs = env.reset()  # the constructor's seed: slot i is seeded with seed + i
    ref_obs = np.stack([r.reset(seed=seed + i)[0] for i, r in enumerate(refs)])
    np.testing.assert_array_equal(obs, ref_obs)
    rng = np.random.default_rng(0)
    lengths, records = np.zeros(n, dtype=int), []
    for _ in range(200):
        actions = rng.integers(0, 2, n)
        obs, reward, done, episodes = env.step(actions)
        lengths += 1
        for i, ref in enumerate(refs):
            o, r, term, trunc, _ = ref.step(int(actions[i]))
            assert reward[i] == r and done[i] == (term or trunc)
            if done[i]:
                o, _ = ref.reset()  # gymnasium auto-reset: unseeded reset of the same env
                assert np.all(np.abs(obs[i]) <= 0.05)  # CartPole's fresh-episode state
            np.testing.assert_array_equal(obs[i], o)
        expected = [{"task": "CartPole-v1", "task_id": 0, "slot": int(i), "return": float(lengths[i]),
                     "length": int(lengths[i])} for i in np.flatnonzero(done)]
        assert episodes == expected
        lengths[done] = 0
        records.extend(episodes)
    assert len(records) >= 5
    env.close()


def test_gym_truncation_is_done_and_discrete_obs_are_one_hot():
    with GymnasiumEnv("CartPole-v1", 2, seed=0, max_episode_steps=7) as env:
        records, _, _ = run_and_check(env, 30)
    assert records and all(r["length"] <= 7 for r in records) and any(r["length"] == 7 for r in records)
    with GymnasiumEnv("FrozenLake-v1", 2, seed=0) as env:
        assert env.obs_shape == (16,) and env.num_actions == 4
        records, obs0, _ = run_and_check(env, 100)
        np.testing.assert_array_equal(obs0.sum(1), 1.0)
        assert obs0[:, 0].tolist() == [1.0, 1.0]  # both start in state 0


def test_gym_errors():
    with pytest.raises(ValueError, match=r"(?s)CartPol-v1.*CartPole-v1.*register"):
        GymnasiumEnv("CartPol-v1", 2)
    with pytest.raises(ValueError, match="Acrobot-v1"):  # lists the classic-control ids
        GymnasiumEnv("NoSuchGameAtAll-v3", 2)
    with pytest.raises(ValueError, match="discrete"):
        GymnasiumEnv("Pendulum-v1", 2)
    with GymnasiumEnv("CartPole-v1", 2) as env:
        with pytest.raises(RuntimeError, match="reset"):
            env.step(np.zeros(2, dtype=int))
        env.reset(seed=0)
        with pytest.raises(ValueError, match="shape"):
            env.step(np.zeros(3, dtype=int))
        with pytest.raises(ValueError, match=r"\[0, 2\)"):
            env.step(np.array([0, 2]))


# -- memory task -----------------------------------------------------------------------------------
def test_memory_env_oracle_gets_one_and_blank_steps_hide_the_cue():
    num_cues, delay, n = 5, 6, 8
    env = MemoryEnv(n, num_cues=num_cues, delay=delay, seed=0)
    assert env.obs_shape == (num_cues + 1,) and env.obs_dtype == np.float32 and env.num_actions == num_cues
    obs = env.reset()
    memory = np.full(n, -1)
    t = np.zeros(n, dtype=int)
    records = []
    for _ in range(10 * (delay + 2)):
        shown = obs[:, :num_cues].sum(1) == 1
        assert np.all(shown == (t == 0))  # the cue appears only at an episode's first step
        np.testing.assert_array_equal(obs[t == 0, num_cues], 0.0)
        assert np.all(obs[(t > 0) & (t <= delay)] == 0.0)  # blank
        np.testing.assert_array_equal(obs[:, num_cues], (t == delay + 1).astype(np.float32))  # query flag
        memory[shown] = obs[shown, :num_cues].argmax(1)
        obs, reward, done, episodes = env.step(memory)
        assert np.all(done == (t == delay + 1))
        t = np.where(done, 0, t + 1)
        records.extend(episodes)
    assert len(records) == 10 * n
    assert all(r["return"] == 1.0 and r["length"] == delay + 2 for r in records)


def test_memory_env_memoryless_policy_gets_chance():
    num_cues = 4
    env = MemoryEnv(64, num_cues=num_cues, delay=2, seed=1)
    records, _, _ = run_and_check(env, 150)  # random actions: no memory
    env.reset(seed=2)
    for _ in range(150):
        records.extend(env.step(np.full(64, 3))[3])  # always the same answer
    mean = np.mean([r["return"] for r in records])
    assert len(records) > 4000
    assert abs(mean - 1 / num_cues) < 0.03


def test_memory_env_is_deterministic_from_seed():
    a, b = MemoryEnv(4, seed=7, delay=1), MemoryEnv(4, seed=7, delay=1)
    np.testing.assert_array_equal(a.reset(), b.reset())
    actions = np.random.default_rng(0).integers(0, 4, (30, 4))
    for act in actions:
        for x, y in zip(a.step(act)[:3], b.step(act)[:3]):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.reset(seed=3), MemoryEnv(4, seed=3, delay=1).reset())


# -- factory ---------------------------------------------------------------------------------------
def test_make_env():
    env = make_env("memory", 3, seed=0, num_cues=3, delay=1)
    assert isinstance(env, MemoryEnv) and env.num_envs == 3 and env.num_actions == 3
    env = make_env("gym", 2, seed=0, env_id="CartPole-v1")
    assert isinstance(env, GymnasiumEnv) and env.reset().shape == (2, 4)
    env.close()
    env = make_env("procgen", 2, seed=0, games="coinrun")
    assert isinstance(env, ProcgenEnv) and env.reset().shape == (2, 64, 64, 3)
    env.close()
    with pytest.raises(ValueError, match="procgen, gym, memory"):
        make_env("atari", 2)
    assert set(ENV_KINDS) == {"procgen", "gym", "memory"}
