//! Parser tests on real tool output (tests/fixtures, see its README) with fake Python stacks.

mod common;
use common::*;
use stacktext::{Format, Options, OutputMode};

fn opts(pid: Option<u32>) -> Options {
    Options {
        pid,
        ..Options::default()
    }
}

/// Stacks of an input, split at blank lines, each as the `[ ]` lines it holds.
fn helper_groups_per_stack(input: &[u8]) -> Vec<Vec<(String, u32, String)>> {
    let mut all = vec![Vec::new()];
    for l in lines(input) {
        if String::from_utf8_lossy(l).trim().is_empty() {
            all.push(Vec::new());
        } else if is_annotation(l) {
            all.last_mut().unwrap().push(parse_annotation(l));
        }
    }
    all.retain(|v| !v.is_empty());
    all
}

fn strip_annotations(input: &[u8]) -> Vec<u8> {
    lines(input)
        .into_iter()
        .filter(|l| !is_annotation(l))
        .flatten()
        .copied()
        .collect()
}

/// Python 3.10 and older: one Python frame per eval call, all entry frames.
fn py310(frames: &[(String, u32, String)]) -> Vec<protocol::Frame> {
    frames
        .iter()
        .map(|(f, l, n)| frame(f, n, *l, true))
        .collect()
}

#[test]
fn omnios_plain_gets_the_helpers_lines() {
    let plain = fixture("dtrace/omnios-blog-3.10-jstack-plain.txt");
    let helper = fixture("dtrace/omnios-blog-3.10-jstack-helper.txt");
    // The real helper's output names the Python frames of this program.
    let groups = helper_groups_per_stack(&helper);
    assert_eq!(groups.len(), 1);
    let mut src = FakeSource::with(246, vec![thread(None, py310(&groups[0]))]);
    let (out, sum) = run(&plain, &mut src, &opts(Some(246)));
    assert_eq!(without_added(&out, &plain), plain);
    let ours: Vec<&[u8]> = lines(&out)
        .into_iter()
        .filter(|l| is_annotation(l))
        .collect();
    let theirs: Vec<&[u8]> = lines(&helper)
        .into_iter()
        .filter(|l| is_annotation(l))
        .collect();
    assert_eq!(ours, theirs, "same lines, same indentation as the helper");
    // Each added line sits right under an eval frame.
    let ol = lines(&out);
    for (i, l) in ol.iter().enumerate() {
        if is_annotation(l) && !is_annotation(ol[i - 1]) {
            assert!(String::from_utf8_lossy(ol[i - 1]).contains("`_PyEval_EvalFrameDefault+"));
        }
    }
    assert_eq!(
        (sum.stacks, sum.annotated, sum.unannotated_total()),
        (1, 1, 0)
    );
    assert_eq!(src.asked, vec![246]);
}

#[test]
fn omnios_helper_output_annotates_real_and_never_duplicates() {
    let helper = fixture("dtrace/omnios-blog-3.10-jstack-helper.txt");
    let groups = helper_groups_per_stack(&helper);
    // Already annotated: unchanged, source not even asked.
    let mut src = FakeSource::with(246, vec![thread(None, py310(&groups[0]))]);
    let (out, sum) = run(&helper, &mut src, &opts(Some(246)));
    assert_eq!(out, helper);
    assert_eq!(sum.already_annotated, 1);
    assert!(src.asked.is_empty());
    // Stripped of the helper lines: ours go under `_PyEval_EvalFrameDefaultReal`, not the wrapper.
    let stripped = strip_annotations(&helper);
    let (out, sum) = run(&stripped, &mut src, &opts(Some(246)));
    assert_eq!(out, helper);
    assert_eq!(sum.annotated, 1);
}

#[test]
fn dtracetoolkit_profile_aggregation() {
    let input = fixture("dtrace/dtracetoolkit-py_profile.txt");
    // Helper lines present: output identical, nothing asked.
    let mut src = FakeSource::default();
    let (out, sum) = run(&input, &mut src, &opts(Some(1)));
    assert_eq!(out, input);
    assert!(sum.stacks >= 25, "{sum}");
    assert_eq!(sum.already_annotated, sum.with_eval_frames);
    assert!(src.asked.is_empty());

    // Re-annotate the stripped text with the helper's own frames, one answer per stack.
    let stripped = strip_annotations(&input);
    let mut src = FakeSource::default();
    for g in helper_groups_per_stack(&input) {
        src.push(1, vec![thread(None, py310(&g))]);
    }
    let (out, sum) = run(&stripped, &mut src, &opts(Some(1)));
    assert_eq!(out, input);
    assert_eq!(sum.annotated, sum.with_eval_frames);
    assert_eq!(sum.unannotated_total(), 0, "{sum}");

    // Folded: counts are the aggregation's values.
    let counts: Vec<u64> = lines(&input)
        .iter()
        .filter_map(|l| String::from_utf8_lossy(l).trim().parse().ok())
        .collect();
    let mut src = FakeSource::default();
    let o = Options {
        output: OutputMode::Folded,
        ..opts(Some(1))
    };
    let (out, _) = run(&input, &mut src, &o);
    let folded: Vec<u64> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(folded, counts);
}

#[test]
fn dtracetoolkit_quantize_tables() {
    let input = fixture("dtrace/dtracetoolkit-py_mallocstk-quantize.txt");
    let mut src = FakeSource::default();
    let (out, _) = run(&input, &mut src, &opts(None));
    assert_eq!(out, input);
    // Expected counts: sum of each table's rows.
    let mut sums = Vec::new();
    let mut cur: Option<u64> = None;
    for l in String::from_utf8_lossy(&input).lines() {
        if l.contains("Distribution") {
            cur = Some(0);
        } else if let (Some(s), true) = (cur.as_mut(), l.contains('|')) {
            *s += l.split_whitespace().last().unwrap().parse::<u64>().unwrap();
        } else if let Some(s) = cur.take() {
            sums.push(s);
        }
    }
    assert!(sums.len() > 3);
    let o = Options {
        output: OutputMode::Folded,
        ..opts(None)
    };
    let (out, _) = run(&input, &mut FakeSource::default(), &o);
    let text = String::from_utf8(out).unwrap();
    let got: Vec<u64> = text
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(got, sums);
    assert!(text
        .lines()
        .next()
        .unwrap()
        .starts_with("python`_start;python`main;"));
}

#[test]
fn dtracetoolkit_jvm_strings_are_frames() {
    let input = fixture("dtrace/dtracetoolkit-j_profile-jvm-helper.txt");
    let (out, _) = run(&input, &mut FakeSource::default(), &opts(None));
    assert_eq!(out, input);
    let o = Options {
        output: OutputMode::Json,
        ..opts(None)
    };
    let (out, sum) = run(&input, &mut FakeSource::default(), &o);
    let recs: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(recs.len() as u64, sum.stacks);
    let with_jvm: Vec<_> = recs
        .iter()
        .filter(|r| r["native"][0]["text"] == "Func_loop.func_c()V")
        .collect();
    let starts = String::from_utf8_lossy(&input)
        .matches("\n\n              Func_loop.func_c()V\n")
        .count();
    assert!(starts > 10);
    assert_eq!(with_jvm.len(), starts);
    assert_eq!(with_jvm[0]["native"].as_array().unwrap().len(), 10);
    assert_eq!(with_jvm[0]["count"], 30);
}

#[test]
fn dtracetoolkit_unresolved_frames() {
    let input = fixture("dtrace/dtracetoolkit-crash-unresolved.txt");
    let (out, _) = run(&input, &mut FakeSource::default(), &opts(None));
    assert_eq!(out, input);
    let o = Options {
        output: OutputMode::Json,
        ..opts(None)
    };
    let (out, sum) = run(&input, &mut FakeSource::default(), &o);
    assert_eq!(sum.stacks, 2, "user and kernel stacks");
    let recs: Vec<serde_json::Value> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let user = recs[0]["native"].as_array().unwrap();
    assert_eq!(user.len(), 15);
    assert_eq!(user[2]["module"], "procmail");
    assert_eq!(user[2]["address"], 0x805a2b0u64);
    assert_eq!(user[7]["address"], 0xffffffffu64);
    assert_eq!(recs[1]["native"].as_array().unwrap().len(), 4);
}

#[test]
fn bpftrace_perf_mode_aggregation() {
    let input = fixture("bpftrace/ustack-perf-aggregation-pyenv3.11.7.txt");
    // The stacks stop right above the innermost eval frame (no frame pointers): with the
    // target's real Python stacks they do not fit, and are left alone.
    let mut src = FakeSource::with(7548, gdb_target(7548, 7555, 7556));
    let (out, sum) = run(&input, &mut src, &opts(Some(7548)));
    assert_eq!(out, input);
    assert!(sum.with_eval_frames > 20);
    assert_eq!(sum.unannotated_total(), sum.with_eval_frames, "{sum}");
    // A thread with a single eval call fits them: annotated under the tab-indented frame.
    let py = vec![thread(
        Some(7555),
        vec![frame("/srv/demo/target.py", "fib", 24, true)],
    )];
    let mut src = FakeSource::with(7548, py);
    let (out, sum) = run(&input, &mut src, &opts(Some(7548)));
    assert_eq!(without_added(&out, &input), input);
    let o = String::from_utf8_lossy(&out);
    assert!(o.contains(
        "\t7fdc070fd39e _PyEval_EvalFrameDefault+10286 (/opt/pyenv/versions/3.11.7/lib/libpython3.11.so.1.0)\n\t  [ /srv/demo/target.py:24 (fib) ]\n"
    ));
    assert_eq!(sum.annotated, sum.with_eval_frames);
    // Folded counts = the map's values.
    let values: Vec<u64> = o
        .lines()
        .filter_map(|l| l.strip_prefix("]: "))
        .map(|v| v.parse().unwrap())
        .collect();
    let fo = Options {
        output: OutputMode::Folded,
        ..opts(Some(7548))
    };
    let (out, _) = run(&input, &mut src, &fo);
    let got: Vec<u64> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| l.rsplit_once(' ').unwrap().1.parse().unwrap())
        .collect();
    assert_eq!(got, values);
}

/// The target behind the gdb files as `py-spy dump` printed it (peers/), grouped by eval
/// call the way CPython 3.11 runs it: a new C eval call for each call from C (thread
/// bootstrap, `Thread.run` calling its target, `map()` calling the lambda).
fn gdb_target(main_tid: u64, busy_tid: u64, sleep_tid: u64) -> Vec<protocol::ThreadStack> {
    let t = "/srv/demo/target.py";
    let l = "/srv/demo/target_lib.py";
    let th = "/opt/pyenv/versions/3.11.7/lib/python3.11/threading.py";
    let boot = |mut v: Vec<protocol::Frame>| {
        v.push(frame(th, "run", 982, false));
        v.push(frame(th, "_bootstrap_inner", 1045, false));
        v.push(frame(th, "_bootstrap", 1002, true));
        v
    };
    let mut main = vec![
        frame(l, "block_here", 22, false),
        frame(l, "level_c", 12, false),
    ];
    let abc = |v: &mut Vec<protocol::Frame>, n: usize| {
        for _ in 0..n {
            v.push(frame(l, "level_b", 7, false));
            v.push(frame(t, "level_a", 50, false));
            v.push(frame(l, "level_c", 17, false));
        }
    };
    abc(&mut main, 3);
    main.push(frame(l, "level_b", 7, false));
    main.push(frame(t, "level_a", 50, false));
    main.push(frame(l, "<lambda>", 16, true));
    main.push(frame(l, "level_c", 16, false));
    abc(&mut main, 3);
    main.push(frame(l, "level_b", 7, false));
    main.push(frame(t, "level_a", 50, false));
    main.push(frame(l, "<lambda>", 16, true));
    main.push(frame(l, "level_c", 16, false));
    abc(&mut main, 1);
    main.push(frame(l, "level_b", 7, false));
    main.push(frame(t, "level_a", 50, false));
    main.push(frame(t, "main", 73, false));
    main.push(frame(t, "<module>", 77, true));
    let mut busy = vec![frame(t, "fib", 24, false)];
    busy.extend((0..10).map(|_| frame(t, "fib", 27, false)));
    busy.push(frame(t, "busy", 33, true));
    vec![
        thread(Some(main_tid), main),
        thread(Some(busy_tid), boot(busy)),
        thread(Some(sleep_tid), boot(vec![frame(t, "reporter", 41, true)])),
    ]
}

#[test]
fn gdb_thread_apply_all_bt_with_symbols() {
    let input = fixture("gdb/thread-apply-all-bt-pyenv3.11.7.txt");
    let mut src = FakeSource::with(7548, gdb_target(7548, 7555, 7556));
    let (out, sum) = run(&input, &mut src, &opts(Some(7548)));
    assert_eq!(without_added(&out, &input), input);
    assert_eq!(
        (sum.stacks, sum.annotated, sum.unannotated_total()),
        (3, 3, 0),
        "{sum}"
    );
    let o = String::from_utf8(out).unwrap();
    assert!(o.contains("at Python/ceval.c:5020\n  [ /srv/demo/target.py:41 (reporter) ]\n#4 "));
    assert!(o.contains(
        "at Python/ceval.c:5376\n  [ /opt/pyenv/versions/3.11.7/lib/python3.11/threading.py:982 (run) ]\n  [ /opt/pyenv/versions/3.11.7/lib/python3.11/threading.py:1045 (_bootstrap_inner) ]\n"
    ));
    assert_eq!(o.matches("(<lambda>) ]").count(), 2);
    assert_eq!(o.matches("(<module>) ]").count(), 1);
    // pid from the thread's LWP when no --pid: asks the source.
    for t in [7548, 7555, 7556] {
        src.tids.insert(t, 7548);
    }
    let (_, sum) = run(&input, &mut src, &opts(None));
    assert_eq!(sum.annotated, 3, "{sum}");
}

#[test]
fn gdb_stripped_static_build() {
    let input = fixture("gdb/thread-apply-all-bt-debian3.11.2-stripped.txt");
    let mut src = FakeSource::with(7549, gdb_target(7549, 7551, 7552));
    let (out, sum) = run(&input, &mut src, &opts(Some(7549)));
    assert_eq!(without_added(&out, &input), input);
    assert_eq!((sum.stacks, sum.annotated), (3, 3), "{sum}");
    let o = String::from_utf8(out).unwrap();
    assert!(o.contains("#2  0x000000000052c21a in _PyEval_EvalFrameDefault ()\n  [ /srv/demo/target.py:41 (reporter) ]\n"));
    // JSON: Python frames hang under the eval frames.
    let jo = Options {
        output: OutputMode::Json,
        ..opts(Some(7549))
    };
    let (out, _) = run(&input, &mut src, &jo);
    let first: serde_json::Value =
        serde_json::from_str(String::from_utf8(out).unwrap().lines().next().unwrap()).unwrap();
    assert_eq!(first["tid"], 7552);
    assert_eq!(first["native"][2]["python"][0]["function"], "reporter");
    assert!(
        first["native"][1].get("symbol").is_none(),
        "?? has no symbol"
    );
}

#[test]
fn forced_format_and_synthetic_perf_script() {
    // perf script's documented layout (no capture in the fixtures).
    let input = b"python3 4242/4243 [001] 100.000001:     250000 cpu-clock:pppH: \n\
\t    7f0000001000 PyLong_Add+0x12 (/usr/lib/libpython3.11.so.1.0)\n\
\t    7f0000002000 _PyEval_EvalFrameDefault+0x1c2 (/usr/lib/libpython3.11.so.1.0)\n\
\t    7f0000003000 main+0x10 (/usr/bin/python3.11)\n\
\n";
    let mut src = FakeSource::with(
        4242,
        vec![
            thread(Some(4242), vec![frame("a.py", "x", 1, true)]),
            thread(
                Some(4243),
                vec![
                    frame("b.py", "f", 3, false),
                    frame("b.py", "<module>", 9, true),
                ],
            ),
        ],
    );
    for forced in [None, Some(Format::Perf)] {
        let o = Options {
            format: forced,
            ..opts(None)
        };
        let (out, sum) = run(input, &mut src, &o);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("(/usr/lib/libpython3.11.so.1.0)\n\t      [ b.py:3 (f) ]\n\t      [ b.py:9 (<module>) ]\n"), "{s}");
        assert_eq!(sum.annotated, 1);
    }
}
