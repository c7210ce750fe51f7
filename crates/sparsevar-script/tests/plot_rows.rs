//! `plot_lines`, `plot_bars` and `compare` from a script: the data they drew comes back, and
//! bad rows or options are errors at the call's position naming the row and the column.

mod common;

use sparsevar_script::{ErrorKind, run_script};

const ROWS: &str = "let rows = [#{T: 8, m: 64, model: \"a\"}, #{T: 16, m: 96, model: \"a\"}, #{T: 8, m: 128, model: \"b\"}];\n";

#[test]
fn plot_lines_and_bars_return_the_data_they_drew() {
    let dir = common::fresh("rows-ok");
    let src = format!(
        "{ROWS}let f = plot_lines(rows, #{{x: \"T\", y: \"m\", group: \"model\", log_y: true}}, \"lines.svg\");\n\
         print(f.series.a);\nprint(f.series.b);\n\
         let g = plot_bars(rows, #{{x: \"T\", y: \"m\", group: \"model\"}}, \"bars.png\");\nprint(g.series.a);\n\
         let h = plot_lines(rows, #{{x: \"T\", y: \"m\"}}, \"one.png\");\nprint(h.series.keys());\n"
    );
    let path = common::write(&dir, "ok.rhai", &src);
    let out = run_script(common::context(&path, dir.join("out"))).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.output, ["[[8.0, 64.0], [16.0, 96.0]]", "[[8.0, 128.0]]", "[[0.0, 64.0], [1.0, 96.0]]", "[\"m\"]"]);
    for f in ["lines.svg", "bars.png", "one.png"] {
        assert_eq!(common::figure_size(&dir.join("out").join(f)), (sparsevar_plot::WIDTH, sparsevar_plot::HEIGHT), "{f}");
    }
}

#[test]
fn bad_rows_and_options_are_errors_at_the_call() {
    let dir = common::fresh("rows-bad");
    let cases = [
        ("plot_lines(rows, #{x: \"T\", y: \"steps\"}, \"a.png\")", "plot_lines: row 0 has no column `steps`"),
        ("plot_lines([#{T: 1, m: 2}, #{T: 2}], #{x: \"T\", y: \"m\"}, \"a.png\")", "plot_lines: row 1 has no column `m` (it has T)"),
        ("plot_lines(rows, #{x: \"T\", y: \"model\"}, \"a.png\")", "plot_lines: row 0 column `model` is string (a), not a number"),
        ("plot_lines(rows, #{x: \"T\", y: \"m\", colour: \"model\"}, \"a.png\")", "plot_lines: unknown option `colour`"),
        ("plot_lines(rows, #{y: \"m\"}, \"a.png\")", "plot_lines: option `x`"),
        ("plot_lines([1, 2], #{x: \"T\", y: \"m\"}, \"a.png\")", "plot_lines: row 0 is i64, not a map"),
        ("plot_lines([], #{x: \"T\", y: \"m\"}, \"a.png\")", "plot_lines: no rows"),
        ("plot_lines(rows, #{x: \"T\", y: \"m\"}, \"a.jpg\")", "must end in .png or .svg"),
        ("plot_bars(rows, #{x: \"T\", y: \"m\"}, \"a.png\")", "two bars for category 8"),
        ("plot_bars(rows, #{x: \"T\", y: \"m\", group: \"kind\"}, \"a.png\")", "plot_bars: row 0 has no column `kind`"),
        ("compare([\"nothere\", \"alsonot\"])", "not a results folder"),
        ("compare([\"../up\", \"x\"])", "must be a folder inside the out folder"),
    ];
    for (i, (call, want)) in cases.iter().enumerate() {
        let path = common::write(&dir, &format!("bad{i}.rhai"), &format!("{ROWS}\n    let f = {call};\n"));
        let e = run_script(common::context(&path, dir.join("out"))).expect_err(call);
        assert_eq!(e.kind, ErrorKind::Runtime, "{call}");
        let first = e.to_string().lines().next().unwrap().to_string();
        assert!(first.starts_with(&format!("{}:3:13: ", path.display())), "{call}: error not at the call: {first}");
        assert!(first.contains(want), "{call}: {first}");
    }
}
