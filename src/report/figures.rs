//! Figures mode: the form's table 1.1 (可连接设备数量, 日运行数量, 在线设备数量
//! by class and cloud), its breakdown by category (补充说明和分类详细介绍) and
//! the protocols adapted (工业协议兼容适配数量), as Markdown, JSON or CSV.
//!
//! Every device figure comes from one `/api/v1/counts` reply grouped by all
//! four dimensions (class, category, protocol, cloud), so every table is a
//! sum over the same snapshot and the tables always agree with one another.
//! `/api/v1/summary` gives the day, the time zone and the protocol lists.

use std::ops::AddAssign;

use fieldlink_model::{Category, Cloud, DeviceClass};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::text::{category_name, csv_row, md_cell, md_header, md_row, protocol_name, zone};

/// The `group_by` the report asks `/api/v1/counts` for: the finest grain,
/// from which every breakdown is summed.
pub(super) const GROUP_BY: &str = "class,category,protocol,cloud";

/// The parts of `/api/v1/summary` the report uses (the figures themselves
/// are summed from [`Counts`]).
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Summary {
    /// The day of the 日运行数量 figure, `YYYY-MM-DD`.
    pub(super) day: String,
    /// The registry's time zone, e.g. `+08:00`; days are cut there.
    pub(super) timezone: String,
    /// Protocols adapted and supported.
    pub(super) protocols: Protocols,
}

/// `protocols` of `/api/v1/summary`.
#[derive(Debug, Clone, Default, Deserialize)]
pub(super) struct Protocols {
    /// How many protocols have at least one registered device.
    pub(super) adapted: u64,
    /// Their codes.
    #[serde(default)]
    pub(super) list: Vec<String>,
    /// Codes of the protocols the connected gateways offer.
    #[serde(default)]
    pub(super) supported: Vec<String>,
}

/// The body of `/api/v1/counts?group_by=class,category,protocol,cloud`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Counts {
    /// The day of the `reporting` figures.
    pub(super) day: String,
    /// The non-empty cells, in code order.
    pub(super) rows: Vec<Cell>,
}

/// One non-empty cell of `/api/v1/counts` grouped by every dimension.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Cell {
    /// Device class.
    pub(super) class: DeviceClass,
    /// Category code (kept as text so a newer registry's categories still show).
    pub(super) category: String,
    /// Protocol code (kept as text: drivers are added over time).
    pub(super) protocol: String,
    /// Cloud of the devices' tenant.
    pub(super) cloud: Cloud,
    /// 可连接设备: announced and not retired.
    pub(super) registered: u64,
    /// Online now.
    pub(super) online: u64,
    /// 日运行: reported at least one point on the day.
    pub(super) reporting: u64,
}

/// The three figures of a group of devices.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Figures {
    /// 可连接设备数量.
    pub(super) registered: u64,
    /// 在线设备数量 (now).
    pub(super) online: u64,
    /// 日运行数量 (on the day).
    pub(super) reporting: u64,
}

impl AddAssign for Figures {
    fn add_assign(&mut self, other: Figures) {
        self.registered += other.registered;
        self.online += other.online;
        self.reporting += other.reporting;
    }
}

impl Cell {
    /// The cell's three figures.
    fn figures(&self) -> Figures {
        Figures {
            registered: self.registered,
            online: self.online,
            reporting: self.reporting,
        }
    }
}

/// The figures of table 1.1, in the form's row order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    Registered,
    Reporting,
    Online,
}

impl Metric {
    const ALL: [Metric; 3] = [Metric::Registered, Metric::Reporting, Metric::Online];

    /// The key in the API and in the CSV.
    const fn code(self) -> &'static str {
        match self {
            Metric::Registered => "registered",
            Metric::Reporting => "reporting",
            Metric::Online => "online",
        }
    }

    /// The name the form uses.
    const fn zh_name(self) -> &'static str {
        match self {
            Metric::Registered => "可连接设备数量",
            Metric::Reporting => "日运行数量",
            Metric::Online => "在线设备数量",
        }
    }

    fn of(self, f: &Figures) -> u64 {
        match self {
            Metric::Registered => f.registered,
            Metric::Reporting => f.reporting,
            Metric::Online => f.online,
        }
    }
}

/// One line of the category table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CategoryLine {
    class: DeviceClass,
    code: String,
    total: Figures,
    public: Figures,
    private: Figures,
}

/// The figures of one day from one registry, ready to format.
#[derive(Debug, Clone)]
pub(super) struct Report {
    registry: String,
    day: String,
    timezone: String,
    protocols: Protocols,
    cells: Vec<Cell>,
}

impl Report {
    /// Combines the two replies.
    ///
    /// # Errors
    /// The replies are about different days (the report asks for the
    /// summary's day explicitly, so this means a misbehaving registry).
    pub(super) fn new(registry: &str, summary: Summary, counts: Counts) -> anyhow::Result<Self> {
        if counts.day != summary.day {
            anyhow::bail!(
                "the registry answered for day {} in /api/v1/counts but {} in /api/v1/summary",
                counts.day,
                summary.day
            );
        }
        Ok(Report {
            registry: registry.to_owned(),
            day: summary.day,
            timezone: summary.timezone,
            protocols: summary.protocols,
            cells: counts.rows,
        })
    }

    /// The sum of the cells for which `keep` holds.
    fn sum(&self, keep: impl Fn(&Cell) -> bool) -> Figures {
        let mut total = Figures::default();
        for cell in self.cells.iter().filter(|c| keep(c)) {
            total += cell.figures();
        }
        total
    }

    /// Every category of the taxonomy in the form's order (with zeros where
    /// no device is), then any category this build does not know, each
    /// placed at the end of its class.
    fn category_lines(&self) -> Vec<CategoryLine> {
        let mut lines: Vec<CategoryLine> = Category::ALL
            .iter()
            .map(|c| CategoryLine {
                class: c.class(),
                code: c.code().to_owned(),
                total: Figures::default(),
                public: Figures::default(),
                private: Figures::default(),
            })
            .collect();
        for cell in &self.cells {
            let position = lines
                .iter()
                .position(|l| l.class == cell.class && l.code == cell.category);
            let line = match position {
                Some(i) => &mut lines[i],
                None => {
                    lines.push(CategoryLine {
                        class: cell.class,
                        code: cell.category.clone(),
                        total: Figures::default(),
                        public: Figures::default(),
                        private: Figures::default(),
                    });
                    let last = lines.len() - 1;
                    &mut lines[last]
                }
            };
            line.total += cell.figures();
            match cell.cloud {
                Cloud::Public => line.public += cell.figures(),
                Cloud::Private => line.private += cell.figures(),
            }
        }
        // Stable: the form's order within a class is kept.
        lines.sort_by_key(|l| l.class.index());
        lines
    }

    /// Table 1.1, the category table and the protocols, as Markdown.
    pub(super) fn markdown(&self) -> String {
        let zone = zone(&self.timezone);
        let mut out = format!("# 平台连接设备数量 — {}（{zone}）\n\n", self.day);
        out.push_str(&format!(
            "- 统计日：{}（日界按 {zone} 划分）\n- 数据来源：Fieldlink registry {}\n\n",
            self.day, self.registry
        ));

        out.push_str("## 表 1.1 设备连接情况\n\n");
        let mut titles = vec!["指标", "范围", "合计"];
        titles.extend(DeviceClass::ALL.iter().map(|c| c.zh_name()));
        out.push_str(&md_header(
            &titles,
            &[false, false, true, true, true, true, true],
        ));
        for metric in Metric::ALL {
            for cloud in [None, Some(Cloud::Public), Some(Cloud::Private)] {
                let in_scope = |c: &Cell| cloud.is_none_or(|cloud| c.cloud == cloud);
                let mut scope = cloud.map_or("合计", Cloud::zh_name).to_owned();
                if metric == Metric::Reporting && cloud == Some(Cloud::Public) {
                    scope.push_str(" ★");
                }
                let mut cells = vec![
                    metric.zh_name().to_owned(),
                    scope,
                    metric.of(&self.sum(in_scope)).to_string(),
                ];
                cells.extend(DeviceClass::ALL.iter().map(|class| {
                    metric
                        .of(&self.sum(|c| in_scope(c) && c.class == *class))
                        .to_string()
                }));
                out.push_str(&md_row(&cells));
            }
        }
        out.push_str(&format!(
            "\n★ 表 1.1 填报的日运行数量：公有云上 {day} 当日（{zone}）上报过实时数据的设备数。\n\n\
             - 可连接设备数量：网关已登记接入、未退役的设备。\n\
             - 日运行数量：统计日内至少上报一个实时数据点的设备，按设备去重，精确计数。\n\
             - 在线设备数量：生成报告时网关与之保持会话的设备（当前值，不随统计日变化）。\n\n",
            day = self.day
        ));

        out.push_str("## 补充说明和分类详细介绍\n\n");
        out.push_str(&md_header(
            &[
                "设备类别",
                "细分类别代码",
                "细分类别",
                "可连接设备数量",
                "在线设备数量",
                "日运行数量",
            ],
            &[false, false, false, true, true, true],
        ));
        let lines = self.category_lines();
        for line in &lines {
            out.push_str(&md_row(&[
                line.class.zh_name().to_owned(),
                md_cell(&line.code),
                md_cell(category_name(&line.code)),
                line.total.registered.to_string(),
                line.total.online.to_string(),
                line.total.reporting.to_string(),
            ]));
        }
        let all = self.sum(|_| true);
        out.push_str(&md_row(&[
            "合计".to_owned(),
            String::new(),
            String::new(),
            all.registered.to_string(),
            all.online.to_string(),
            all.reporting.to_string(),
        ]));
        out.push('\n');

        out.push_str("## 工业协议兼容适配数量\n\n");
        let adapted: Vec<String> = self
            .protocols
            .list
            .iter()
            .map(|p| protocol_name(p).to_owned())
            .collect();
        if adapted.is_empty() {
            out.push_str(&format!("已适配协议：{} 种。\n\n", self.protocols.adapted));
        } else {
            out.push_str(&format!(
                "已适配协议：{} 种（{}）。\n\n",
                self.protocols.adapted,
                adapted.join("、")
            ));
            out.push_str(&md_header(
                &[
                    "协议",
                    "代码",
                    "可连接设备数量",
                    "在线设备数量",
                    "日运行数量",
                ],
                &[false, false, true, true, true],
            ));
            for code in &self.protocols.list {
                let f = self.sum(|c| c.protocol == *code);
                out.push_str(&md_row(&[
                    md_cell(protocol_name(code)),
                    md_cell(code),
                    f.registered.to_string(),
                    f.online.to_string(),
                    f.reporting.to_string(),
                ]));
            }
            out.push('\n');
        }
        let supported: Vec<String> = self
            .protocols
            .supported
            .iter()
            .map(|p| format!("{}（{p}）", protocol_name(p)))
            .collect();
        if supported.is_empty() {
            out.push_str("网关支持的协议：（尚无网关登记）\n");
        } else {
            out.push_str(&format!("网关支持的协议：{}\n", supported.join("、")));
        }
        out
    }

    /// One figure in the shape of `/api/v1/summary` (`total`, `by_class`,
    /// `by_cloud`), plus `by_class_cloud` (the cells of table 1.1).
    fn breakdown(&self, metric: Metric) -> Value {
        let mut by_class = Map::new();
        let mut by_class_cloud = Map::new();
        for class in DeviceClass::ALL {
            by_class.insert(
                class.code().to_owned(),
                metric.of(&self.sum(|c| c.class == *class)).into(),
            );
            let mut clouds = Map::new();
            for cloud in Cloud::ALL {
                clouds.insert(
                    cloud.code().to_owned(),
                    metric
                        .of(&self.sum(|c| c.class == *class && c.cloud == *cloud))
                        .into(),
                );
            }
            by_class_cloud.insert(class.code().to_owned(), clouds.into());
        }
        let mut by_cloud = Map::new();
        for cloud in Cloud::ALL {
            by_cloud.insert(
                cloud.code().to_owned(),
                metric.of(&self.sum(|c| c.cloud == *cloud)).into(),
            );
        }
        json!({
            "total": metric.of(&self.sum(|_| true)),
            "by_class": by_class,
            "by_cloud": by_cloud,
            "by_class_cloud": by_class_cloud,
        })
    }

    /// One JSON object: the summary's shape (`registered`, `online`,
    /// `reporting`, `protocols`) summed from the counts, protocol figures
    /// (`protocols.by_protocol`) and one entry per category (`categories`).
    ///
    /// # Errors
    /// None in practice (serializing a JSON value).
    pub(super) fn json(&self) -> anyhow::Result<String> {
        let figures = |f: &Figures| json!({"registered": f.registered, "online": f.online, "reporting": f.reporting});
        let by_protocol: Vec<Value> = self
            .protocols
            .list
            .iter()
            .map(|code| {
                let f = self.sum(|c| c.protocol == *code);
                json!({
                    "protocol": code,
                    "name": protocol_name(code),
                    "registered": f.registered,
                    "online": f.online,
                    "reporting": f.reporting,
                })
            })
            .collect();
        let categories: Vec<Value> = self
            .category_lines()
            .iter()
            .map(|l| {
                json!({
                    "class": l.class.code(),
                    "class_name": l.class.zh_name(),
                    "category": l.code,
                    "category_name": category_name(&l.code),
                    "registered": l.total.registered,
                    "online": l.total.online,
                    "reporting": l.total.reporting,
                    "by_cloud": {
                        "public": figures(&l.public),
                        "private": figures(&l.private),
                    },
                })
            })
            .collect();
        let value = json!({
            "registry": self.registry,
            "day": self.day,
            "timezone": self.timezone,
            "registered": self.breakdown(Metric::Registered),
            "online": self.breakdown(Metric::Online),
            "reporting": self.breakdown(Metric::Reporting),
            "protocols": {
                "adapted": self.protocols.adapted,
                "list": self.protocols.list,
                "supported": self.protocols.supported,
                "by_protocol": by_protocol,
            },
            "categories": categories,
        });
        let mut text = serde_json::to_string_pretty(&value)?;
        text.push('\n');
        Ok(text)
    }

    /// Long-format CSV: one record per figure and non-empty cell (see
    /// [`CSV_HEADER`]); summing `value` over any columns gives the form's
    /// figures.
    pub(super) fn csv(&self) -> String {
        let mut out = String::from(CSV_HEADER);
        out.push('\n');
        for metric in Metric::ALL {
            for cell in &self.cells {
                out.push_str(&csv_row(&[
                    self.day.as_str(),
                    metric.code(),
                    cell.class.code(),
                    &cell.category,
                    &cell.protocol,
                    cell.cloud.code(),
                    &metric.of(&cell.figures()).to_string(),
                    metric.zh_name(),
                    cell.class.zh_name(),
                    category_name(&cell.category),
                    protocol_name(&cell.protocol),
                    cell.cloud.zh_name(),
                ]));
            }
        }
        out
    }
}

/// The header of the figures CSV.
pub(super) const CSV_HEADER: &str = "day,metric,class,category,protocol,cloud,value,\
metric_name,class_name,category_name,protocol_name,cloud_name";

#[cfg(test)]
mod tests {
    use super::*;

    /// Real shapes of the registry's replies for a small fleet. Public
    /// tenant: 2 mining (modbus-tcp; 1 online, 1 reporting) and 1 robot
    /// (opc-ua, reporting). Private tenant: 1 logistics AGV (modbus-tcp,
    /// online, reporting) and 1 gas detector (mqtt-json, silent).
    fn report() -> Report {
        let summary = r#"{"day":"2026-11-26","timezone":"+08:00",
            "registered":{"total":5,"by_class":{"operating":2,"processing":1,"mobile":1,"other":1},"by_cloud":{"public":3,"private":2}},
            "online":{"total":2,"by_class":{"operating":1,"processing":0,"mobile":1,"other":0},"by_cloud":{"public":1,"private":1}},
            "reporting":{"total":3,"by_class":{"operating":1,"processing":1,"mobile":1,"other":0},"by_cloud":{"public":2,"private":1}},
            "protocols":{"adapted":3,"list":["modbus-tcp","opc-ua","mqtt-json"],"supported":["modbus-tcp","opc-ua"]}}"#;
        let counts = r#"{"day":"2026-11-26","timezone":"+08:00","group_by":["class","category","protocol","cloud"],"rows":[
            {"class":"operating","category":"mining","protocol":"modbus-tcp","cloud":"public","registered":2,"online":1,"reporting":1},
            {"class":"processing","category":"robots","protocol":"opc-ua","cloud":"public","registered":1,"online":0,"reporting":1},
            {"class":"mobile","category":"logistics","protocol":"modbus-tcp","cloud":"private","registered":1,"online":1,"reporting":1},
            {"class":"other","category":"safety","protocol":"mqtt-json","cloud":"private","registered":1,"online":0,"reporting":0}]}"#;
        Report::new(
            "http://127.0.0.1:7680",
            serde_json::from_str(summary).unwrap(),
            serde_json::from_str(counts).unwrap(),
        )
        .unwrap()
    }

    fn lines(text: &str) -> Vec<&str> {
        text.lines().collect()
    }

    #[test]
    fn heading_shows_day_time_zone_and_registry() {
        let md = report().markdown();
        let l = lines(&md);
        assert_eq!(l[0], "# 平台连接设备数量 — 2026-11-26（UTC+08:00）");
        assert_eq!(l[2], "- 统计日：2026-11-26（日界按 UTC+08:00 划分）");
        assert_eq!(l[3], "- 数据来源：Fieldlink registry http://127.0.0.1:7680");
    }

    #[test]
    fn form_table_splits_every_figure_by_class_and_cloud() {
        let md = report().markdown();
        let start = md.find("| 指标 |").unwrap();
        let table: Vec<&str> = md[start..].lines().take(11).collect();
        assert_eq!(
            table,
            [
                "| 指标 | 范围 | 合计 | 运行设备 | 加工设备 | 行走设备 | 其他设备 |",
                "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
                "| 可连接设备数量 | 合计 | 5 | 2 | 1 | 1 | 1 |",
                "| 可连接设备数量 | 公有云 | 3 | 2 | 1 | 0 | 0 |",
                "| 可连接设备数量 | 私有云 | 2 | 0 | 0 | 1 | 1 |",
                "| 日运行数量 | 合计 | 3 | 1 | 1 | 1 | 0 |",
                "| 日运行数量 | 公有云 ★ | 2 | 1 | 1 | 0 | 0 |",
                "| 日运行数量 | 私有云 | 1 | 0 | 0 | 1 | 0 |",
                "| 在线设备数量 | 合计 | 2 | 1 | 0 | 1 | 0 |",
                "| 在线设备数量 | 公有云 | 1 | 1 | 0 | 0 | 0 |",
                "| 在线设备数量 | 私有云 | 1 | 0 | 0 | 1 | 0 |",
            ]
        );
        assert!(md.contains("★ 表 1.1 填报的日运行数量：公有云上 2026-11-26 当日（UTC+08:00）"));
    }

    #[test]
    fn category_table_lists_every_category_in_form_order_with_a_total() {
        let md = report().markdown();
        let start = md.find("## 补充说明和分类详细介绍").unwrap();
        let table: Vec<&str> = md[start..]
            .lines()
            .filter(|l| l.starts_with('|'))
            .take_while(|l| !l.starts_with("| 协议"))
            .collect();
        // Header, delimiter, 18 categories, total.
        assert_eq!(table.len(), 2 + Category::ALL.len() + 1, "{table:#?}");
        assert_eq!(
            table[0],
            "| 设备类别 | 细分类别代码 | 细分类别 | 可连接设备数量 | 在线设备数量 | 日运行数量 |"
        );
        assert_eq!(table[2], "| 运行设备 | mining | 采矿设备 | 2 | 1 | 1 |");
        assert_eq!(table[3], "| 运行设备 | chemical | 化工设备 | 0 | 0 | 0 |");
        assert_eq!(table[10], "| 加工设备 | robots | 机器人 | 1 | 0 | 1 |");
        assert_eq!(table[16], "| 行走设备 | logistics | 物流设备 | 1 | 1 | 1 |");
        assert_eq!(
            table[18],
            "| 其他设备 | safety | 安全生产设备 | 1 | 0 | 0 |"
        );
        assert_eq!(
            table[19],
            "| 其他设备 | pollution-control | 污染防治设备 | 0 | 0 | 0 |"
        );
        assert_eq!(table[20], "| 合计 |  |  | 5 | 2 | 3 |");
    }

    #[test]
    fn protocol_section_counts_lists_and_sums_per_protocol() {
        let md = report().markdown();
        let start = md.find("## 工业协议兼容适配数量").unwrap();
        assert_eq!(
            lines(&md[start..]),
            [
                "## 工业协议兼容适配数量",
                "",
                "已适配协议：3 种（Modbus TCP、OPC UA、MQTT (JSON)）。",
                "",
                "| 协议 | 代码 | 可连接设备数量 | 在线设备数量 | 日运行数量 |",
                "| --- | --- | ---: | ---: | ---: |",
                "| Modbus TCP | modbus-tcp | 3 | 2 | 2 |",
                "| OPC UA | opc-ua | 1 | 0 | 1 |",
                "| MQTT (JSON) | mqtt-json | 1 | 0 | 0 |",
                "",
                "网关支持的协议：Modbus TCP（modbus-tcp）、OPC UA（opc-ua）",
            ]
        );
    }

    #[test]
    fn an_empty_registry_gives_zero_tables() {
        let summary: Summary = serde_json::from_str(
            r#"{"day":"2026-11-26","timezone":"+08:00","protocols":{"adapted":0,"list":[],"supported":[]}}"#,
        )
        .unwrap();
        let counts: Counts = serde_json::from_str(r#"{"day":"2026-11-26","rows":[]}"#).unwrap();
        let r = Report::new("http://r", summary, counts).unwrap();
        let md = r.markdown();
        assert!(md.contains("| 可连接设备数量 | 合计 | 0 | 0 | 0 | 0 | 0 |\n"));
        assert!(md.contains("| 合计 |  |  | 0 | 0 | 0 |\n"));
        assert!(md.contains("已适配协议：0 种。\n"));
        assert!(md.ends_with("网关支持的协议：（尚无网关登记）\n"));
        assert_eq!(r.csv(), format!("{CSV_HEADER}\n"));
    }

    #[test]
    fn unknown_codes_are_shown_verbatim_and_escaped() {
        let summary: Summary = serde_json::from_str(
            r#"{"day":"2026-11-26","timezone":"+08:00","protocols":{"adapted":1,"list":["pro|net"],"supported":["pro|net"]}}"#,
        )
        .unwrap();
        let counts: Counts = serde_json::from_str(
            r#"{"day":"2026-11-26","rows":[{"class":"operating","category":"new|kind","protocol":"pro|net","cloud":"public","registered":4,"online":4,"reporting":4}]}"#,
        )
        .unwrap();
        let md = Report::new("http://r", summary, counts).unwrap().markdown();
        // After the last operating category, before the processing ones.
        let known = md.find("| 运行设备 | instruments |").unwrap();
        let unknown = md
            .find("| 运行设备 | new\\|kind | new\\|kind | 4 | 4 | 4 |")
            .unwrap();
        let next = md.find("| 加工设备 | machine-tools |").unwrap();
        assert!(known < unknown && unknown < next, "{md}");
        assert!(
            md.contains("| pro\\|net | pro\\|net | 4 | 4 | 4 |\n"),
            "{md}"
        );
    }

    #[test]
    fn replies_for_different_days_are_refused() {
        let summary: Summary = serde_json::from_str(
            r#"{"day":"2026-11-26","timezone":"+08:00","protocols":{"adapted":0}}"#,
        )
        .unwrap();
        let counts: Counts = serde_json::from_str(r#"{"day":"2026-11-27","rows":[]}"#).unwrap();
        let err = Report::new("http://r", summary, counts).unwrap_err();
        assert!(err.to_string().contains("2026-11-27"), "{err}");
    }

    #[test]
    fn csv_has_one_record_per_figure_and_cell() {
        let csv = report().csv();
        let l = lines(&csv);
        assert_eq!(
            l[0],
            "day,metric,class,category,protocol,cloud,value,metric_name,class_name,category_name,protocol_name,cloud_name"
        );
        assert_eq!(l.len(), 1 + 3 * 4);
        assert_eq!(
            l[1],
            "2026-11-26,registered,operating,mining,modbus-tcp,public,2,可连接设备数量,运行设备,采矿设备,Modbus TCP,公有云"
        );
        assert_eq!(
            l[7],
            "2026-11-26,reporting,mobile,logistics,modbus-tcp,private,1,日运行数量,行走设备,物流设备,Modbus TCP,私有云"
        );
        assert_eq!(
            l[12],
            "2026-11-26,online,other,safety,mqtt-json,private,0,在线设备数量,其他设备,安全生产设备,MQTT (JSON),私有云"
        );
        // Public reporting, the form's 日运行数量, by pivoting.
        let public_reporting: u64 = l[1..]
            .iter()
            .map(|r| r.split(',').collect::<Vec<_>>())
            .filter(|f| f[1] == "reporting" && f[5] == "public")
            .map(|f| f[6].parse::<u64>().unwrap())
            .sum();
        assert_eq!(public_reporting, 2);
    }

    #[test]
    fn json_has_the_summary_shape_plus_cells_protocols_and_categories() {
        let v: Value = serde_json::from_str(&report().json().unwrap()).unwrap();
        assert_eq!(v["registry"], "http://127.0.0.1:7680");
        assert_eq!(v["day"], "2026-11-26");
        assert_eq!(v["timezone"], "+08:00");
        assert_eq!(
            v["registered"],
            json!({
                "total": 5,
                "by_class": {"operating": 2, "processing": 1, "mobile": 1, "other": 1},
                "by_cloud": {"public": 3, "private": 2},
                "by_class_cloud": {
                    "operating": {"public": 2, "private": 0},
                    "processing": {"public": 1, "private": 0},
                    "mobile": {"public": 0, "private": 1},
                    "other": {"public": 0, "private": 1},
                },
            })
        );
        assert_eq!(
            v["reporting"]["by_cloud"],
            json!({"public": 2, "private": 1})
        );
        assert_eq!(v["online"]["total"], 2);
        assert_eq!(v["protocols"]["adapted"], 3);
        assert_eq!(v["protocols"]["supported"], json!(["modbus-tcp", "opc-ua"]));
        assert_eq!(
            v["protocols"]["by_protocol"][0],
            json!({"protocol": "modbus-tcp", "name": "Modbus TCP", "registered": 3, "online": 2, "reporting": 2})
        );
        let categories = v["categories"].as_array().unwrap();
        assert_eq!(categories.len(), Category::ALL.len());
        assert_eq!(
            categories[14],
            json!({
                "class": "mobile", "class_name": "行走设备",
                "category": "logistics", "category_name": "物流设备",
                "registered": 1, "online": 1, "reporting": 1,
                "by_cloud": {
                    "public": {"registered": 0, "online": 0, "reporting": 0},
                    "private": {"registered": 1, "online": 1, "reporting": 1},
                },
            })
        );
    }
}
