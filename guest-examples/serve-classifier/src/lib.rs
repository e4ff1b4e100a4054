//! A stateful ferray serve replica (`ferray:runtime/serve`): a
//! nearest-centroid classifier of iris flowers. Its weights (the mean
//! sepal length, sepal width, petal length and petal width of each species
//! in Fisher's iris data) are inside the component; the constructor builds
//! the model from them once per replica, scaling every feature by its spread
//! so that no feature dominates the distance, with the `user_config`'s
//! `metric` (`"euclidean"`, the default, or `"manhattan"`).
//!
//! A request's body is one flower per line, four numbers separated by
//! commas; the answer is one species per line. A batch classifies the lines
//! of all its requests in one pass.

use exports::ferray::runtime::serve::{Guest, GuestReplica, HttpRequest, HttpResponse};

wit_bindgen::generate!({ path: "../../wit", world: "ferray:runtime/serve-replica" });

struct Component;

/// The species and their mean measurements (cm) in Fisher's iris data.
const SPECIES: [(&str, [f64; 4]); 3] = [
    ("setosa", [5.006, 3.428, 1.462, 0.246]),
    ("versicolor", [5.936, 2.770, 4.260, 1.326]),
    ("virginica", [6.588, 2.974, 5.552, 2.026]),
];

/// Each feature's standard deviation over the whole data set.
const SPREAD: [f64; 4] = [0.828, 0.436, 1.765, 0.762];

#[derive(Clone, Copy)]
enum Metric {
    Euclidean,
    Manhattan,
}

struct Model {
    metric: Metric,
    /// The centroids, scaled by [`SPREAD`].
    centroids: Vec<(&'static str, [f64; 4])>,
}

impl Model {
    fn scale(x: [f64; 4]) -> [f64; 4] {
        std::array::from_fn(|i| x[i] / SPREAD[i])
    }

    fn classify(&self, x: [f64; 4]) -> &'static str {
        let x = Self::scale(x);
        let distance = |c: &[f64; 4]| -> f64 {
            let d = c.iter().zip(&x).map(|(a, b)| a - b);
            match self.metric {
                Metric::Euclidean => d.map(|v| v * v).sum::<f64>().sqrt(),
                Metric::Manhattan => d.map(f64::abs).sum(),
            }
        };
        self.centroids
            .iter()
            .min_by(|a, b| distance(&a.1).total_cmp(&distance(&b.1)))
            .map_or("unknown", |c| c.0)
    }
}

/// One flower from a line: four numbers, separated by commas.
fn parse_line(line: &str) -> Result<[f64; 4], String> {
    let values: Vec<f64> = line
        .split(',')
        .map(|v| v.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{line:?}: {e}"))?;
    let values: [f64; 4] = values
        .try_into()
        .map_err(|v: Vec<f64>| format!("{line:?}: expected 4 numbers, got {}", v.len()))?;
    if values.iter().any(|v| !v.is_finite()) {
        return Err(format!("{line:?}: expected finite numbers"));
    }
    Ok(values)
}

fn lines(request: &HttpRequest) -> Result<Vec<[f64; 4]>, String> {
    let body = std::str::from_utf8(&request.body).map_err(|e| format!("not UTF-8: {e}"))?;
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(parse_line)
        .collect()
}

fn answer(status: u16, body: String, batch: usize) -> HttpResponse {
    HttpResponse {
        status,
        headers: vec![
            ("content-type".into(), "text/plain; charset=utf-8".into()),
            ("x-batch-size".into(), batch.to_string()),
        ],
        body: body.into_bytes(),
    }
}

struct Replica {
    model: Model,
}

impl GuestReplica for Replica {
    fn new(config: String) -> Self {
        let compact: String = config.chars().filter(|c| !c.is_whitespace()).collect();
        let metric = if compact.contains("\"metric\":\"manhattan\"") {
            Metric::Manhattan
        } else {
            Metric::Euclidean
        };
        let centroids = SPECIES
            .iter()
            .map(|(name, mean)| (*name, Model::scale(*mean)))
            .collect();
        Replica {
            model: Model { metric, centroids },
        }
    }

    fn handle(&self, request: HttpRequest) -> HttpResponse {
        self.handle_batch(vec![request])
            .pop()
            .unwrap_or_else(|| answer(500, "no answer".into(), 1))
    }

    fn handle_batch(&self, requests: Vec<HttpRequest>) -> Vec<HttpResponse> {
        let n = requests.len();
        // Every request's flowers, classified in one pass.
        let parsed: Vec<Result<Vec<[f64; 4]>, String>> = requests.iter().map(lines).collect();
        let all: Vec<[f64; 4]> = parsed
            .iter()
            .filter_map(|p| p.as_ref().ok())
            .flatten()
            .copied()
            .collect();
        let mut labels = all.into_iter().map(|x| self.model.classify(x));
        parsed
            .into_iter()
            .map(|p| match p {
                Ok(flowers) => {
                    let mut body = String::new();
                    for label in labels.by_ref().take(flowers.len()) {
                        body.push_str(label);
                        body.push('\n');
                    }
                    answer(200, body, n)
                }
                Err(e) => answer(400, format!("bad flower: {e}\n"), n),
            })
            .collect()
    }
}

impl Guest for Component {
    type Replica = Replica;
}

export!(Component);
