"""modelzoo/tf_config.py, the one TF_CONFIG parser, and its four readers agreeing on what it accepts:
the pod launcher, PS training, gdmix_lr's ranks and the embedding-variable shards."""
import json

import pytest

from modelzoo import tf_config
from modelzoo.tf_config import TFConfigError, parse

pytestmark = pytest.mark.fast  # the fast tier (make test-fast)

PS_CLUSTER = {"chief": ["a:1"], "worker": ["b:1", "c:1"], "ps": ["d:1", "e:1"]}


def config(cluster, task):
    return json.dumps({"cluster": cluster, "task": task})


def test_a_valid_tf_config_is_a_frozen_view_of_the_cluster_and_the_task():
    parsed = parse(config(PS_CLUSTER, {"type": "worker", "index": 1}))
    assert (parsed.task_type, parsed.task_index, parsed.chief_type) == ("worker", 1, "chief")
    assert parsed.addresses("ps") == ("d:1", "e:1") and parsed.addresses("evaluator") == ()
    assert parsed.trainers == ("a:1", "b:1", "c:1") and parsed.trainer_index == 2 and not parsed.is_chief
    with pytest.raises(TypeError):
        parsed.cluster["ps"] = ("x:1",)  # read-only
    with pytest.raises(AttributeError):
        parsed.task_index = 0  # frozen
    assert parse(config({"worker": ["a:1"]}, {"type": "worker", "index": 0})).is_chief  # no chief: worker 0
    evaluator = parse(config({"chief": ["a:1"], "ps": ["b:1"]}, {"type": "evaluator"}))  # outside the cluster
    assert (evaluator.task_index, evaluator.trainer_index, evaluator.is_chief) == (0, None, False)


def test_master_is_the_legacy_chief():
    parsed = parse(config({"master": ["m:1"], "worker": ["w:1"]}, {"type": "master", "index": 0}))
    assert parsed.names_master and parsed.is_chief and parsed.chief_type == "master"
    worker = parse(config({"master": ["m:1"], "worker": ["w:1"]}, {"type": "worker", "index": 0}))
    assert worker.trainer_index == 1 and not worker.is_chief  # the master comes first, as a chief would


@pytest.mark.parametrize("text, words", [
    ("{not json", "TF_CONFIG is not JSON"),
    ("[1, 2]", "TF_CONFIG: expected a JSON object with cluster and task"),
    (json.dumps({"cluster": {"worker": ["a:1"]}}), 'TF_CONFIG: expected "task"'),
    (json.dumps({"task": {"type": "worker", "index": 0}}), 'TF_CONFIG: expected "cluster"'),
    (config({"master": ["m:1", "n:1"]}, {"type": "master", "index": 0}),
     "TF_CONFIG: cluster.master names 2 tasks; a cluster has at most one chief"),
    (config({"chief": ["a:1", "b:1"]}, {"type": "chief", "index": 0}),
     "TF_CONFIG: cluster.chief names 2 tasks; a cluster has at most one chief"),
    (config({"chief": ["a:1"], "master": ["m:1"]}, {"type": "chief", "index": 0}),
     "TF_CONFIG: the cluster names both chief and master"),
    (config(PS_CLUSTER, {"type": "worker", "index": 2}),
     "TF_CONFIG: task worker:2 is not in the cluster (chief:1, worker:2, ps:2)"),
    (config(PS_CLUSTER, {"type": "ps", "index": -1}), "TF_CONFIG: task.index -1 is not an integer >= 0"),
    (config(PS_CLUSTER, {"type": "boss", "index": 0}), 'TF_CONFIG: task.type "boss" is not one of chief, worker'),
    (config({"worker": ["nohost"]}, {"type": "worker", "index": 0}),
     'TF_CONFIG: cluster.worker: expected a list of "host:port" strings, got ["nohost"]'),
])
def test_a_bad_tf_config_is_refused_naming_what_is_wrong(text, words):
    with pytest.raises(TFConfigError) as err:
        parse(text)
    assert str(err.value).startswith(words), str(err.value)


def test_unset_or_blank_tf_config_is_one_process():
    assert tf_config.from_environment({}) is None
    assert tf_config.from_environment({"TF_CONFIG": "  "}) is None


def test_the_four_readers_share_the_parser_and_differ_only_on_master():
    """launch.py passes master on, gdmix_lr ranks it as the chief, PS training refuses it asking for chief;
    a bad TF_CONFIG is refused by each with the parser's one message."""
    from distribute_k8s.launch import LaunchError, check_tf_config
    from gdmix_lr.cluster import ClusterError as GdmixError, world_from_tf_config
    from modelzoo.distributed import ClusterError, from_environment
    master = config({"master": ["m:1"], "worker": ["w:1"], "ps": ["p:1"]}, {"type": "master", "index": 0})
    assert check_tf_config(master)["task"] == {"type": "master", "index": 0}
    assert (world_from_tf_config(master).rank, world_from_tf_config(master).size) == (0, 2)
    with pytest.raises(ClusterError, match="master task .*needs it as chief"):
        from_environment({"TF_CONFIG": master})
    bad = config(PS_CLUSTER, {"type": "worker", "index": 7})
    message = "TF_CONFIG: task worker:7 is not in the cluster (chief:1, worker:2, ps:2)"
    for reader, error in ((check_tf_config, LaunchError), (world_from_tf_config, GdmixError),
                          (lambda text: from_environment({"TF_CONFIG": text}), ClusterError)):
        with pytest.raises(error) as err:
            reader(bad)
        assert str(err.value) == message


def test_embedding_variable_shards_are_the_parsers_ps_tasks(monkeypatch):
    from modelzoo.embedding_variables import ps_devices
    monkeypatch.setenv("TF_CONFIG", config(PS_CLUSTER, {"type": "chief", "index": 0}))
    assert ps_devices() == ["/job:ps/replica:0/task:0/device:CPU:0", "/job:ps/replica:0/task:1/device:CPU:0"]
    assert ps_devices(training=False) == ["/device:CPU:0"] * 2
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(TFConfigError, match="TF_CONFIG is not JSON"):
        ps_devices()
    monkeypatch.delenv("TF_CONFIG")
    assert ps_devices() is None
