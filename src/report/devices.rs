//! Device-list mode (附件1): one Markdown section per class with a numbered
//! table, read page by page so memory stays bounded however large the fleet.

use std::io::Write;

use anyhow::bail;
use fieldlink_model::{Cloud, DeviceClass};
use serde::Deserialize;

use super::client::Registry;
use super::text::{category_name, md_cell, md_header, md_row, protocol_name, zone};

/// Devices per page asked of the registry. Not a multiple of the registry's
/// 512-row chunk: the cursor is taken from the last row received anyway.
pub(super) const PAGE_SIZE: usize = 5000;

/// One row of `/api/v1/devices?format=json`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Device {
    /// Globally unique device id.
    pub(super) device_id: String,
    /// Device class.
    pub(super) class: DeviceClass,
    /// Category code (text, so a newer registry's categories still show).
    pub(super) category: String,
    /// Model name (设备类型).
    #[serde(rename = "type")]
    pub(super) device_type: String,
    /// Device name (设备名称).
    pub(super) name: String,
    /// Protocol code.
    pub(super) protocol: String,
    /// Cloud of the device's tenant.
    pub(super) cloud: Cloud,
    /// First announced, RFC 3339 in the registry's zone.
    pub(super) first_seen: String,
    /// Last heard of, if ever.
    #[serde(default)]
    pub(super) last_seen: Option<String>,
    /// Points received on the day (only when the list is asked with `day=`).
    #[serde(default)]
    pub(super) points: Option<u64>,
    /// First point of the day, if any.
    #[serde(default)]
    pub(super) first_point: Option<String>,
    /// Last point of the day, if any.
    #[serde(default)]
    pub(super) last_point: Option<String>,
}

/// A page of `/api/v1/devices?format=json&limit=N`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct DevicePage {
    /// The devices, in device-id order.
    pub(super) devices: Vec<Device>,
    /// Present when the registry stopped at the limit: more may follow.
    #[serde(default)]
    pub(super) next_after: Option<String>,
}

/// Where pages of devices come from: the registry, or a fixed list in tests.
pub(super) trait DeviceSource {
    /// Devices of `class` with ids after `after` (all if `None`), in id
    /// order, at most [`PAGE_SIZE`] of them.
    async fn page(&mut self, class: DeviceClass, after: Option<&str>)
    -> anyhow::Result<DevicePage>;
}

/// Pages from `/api/v1/devices?format=json&class=..&limit=..&after=..[&day=..]`.
pub(super) struct RegistrySource<'a> {
    /// The registry to ask.
    pub(super) registry: &'a Registry,
    /// The day of the point columns, if asked for.
    pub(super) day: Option<&'a str>,
}

impl DeviceSource for RegistrySource<'_> {
    async fn page(
        &mut self,
        class: DeviceClass,
        after: Option<&str>,
    ) -> anyhow::Result<DevicePage> {
        let limit = PAGE_SIZE.to_string();
        let mut query = vec![
            ("format", "json"),
            ("class", class.code()),
            ("limit", limit.as_str()),
        ];
        if let Some(after) = after {
            query.push(("after", after));
        }
        if let Some(day) = self.day {
            query.push(("day", day));
        }
        self.registry.get_json("/api/v1/devices", &query).await
    }
}

/// The title block of the list.
///
/// `day_given` says whether the list carries the day's point columns; the
/// day is shown either way (without `--day` it is today in the registry).
pub(super) fn heading(registry: &str, day: &str, timezone: &str, day_given: bool) -> String {
    let zone = zone(timezone);
    let mut out = format!("# 附件1 设备清单 — {day}（{zone}）\n\n");
    out.push_str(&format!("- 数据来源：Fieldlink registry {registry}\n"));
    out.push_str(&format!("- 时间按 {zone} 显示"));
    if day_given {
        out.push_str(&format!("；当日数据点为 {day} 当日收到的实时数据点"));
    }
    out.push_str("\n\n");
    out
}

/// The heading of a class section.
pub(super) fn section_heading(class: DeviceClass) -> String {
    format!("## {}（{}）\n\n", class.zh_name(), class.code())
}

/// The header rows of a class table.
pub(super) fn table_header(with_day: bool) -> String {
    let mut titles = vec![
        "序号",
        "设备类型",
        "设备名称",
        "设备ID",
        "细分类别",
        "协议",
        "云",
        "首次接入",
        "最近上报",
    ];
    let mut numeric = vec![true, false, false, false, false, false, false, false, false];
    if with_day {
        titles.extend(["当日数据点数", "当日首个数据点", "当日最后数据点"]);
        numeric.extend([true, false, false]);
    }
    md_header(&titles, &numeric)
}

/// One table row: `seq` is the 序号 within the class, from 1.
pub(super) fn device_row(seq: u64, d: &Device, with_day: bool) -> String {
    let or_dash = |t: &Option<String>| t.as_deref().map_or_else(|| "—".to_owned(), md_cell);
    let mut cells = vec![
        seq.to_string(),
        md_cell(&d.device_type),
        md_cell(&d.name),
        md_cell(&d.device_id),
        md_cell(category_name(&d.category)),
        md_cell(protocol_name(&d.protocol)),
        d.cloud.zh_name().to_owned(),
        md_cell(&d.first_seen),
        or_dash(&d.last_seen),
    ];
    if with_day {
        cells.push(d.points.unwrap_or(0).to_string());
        cells.push(or_dash(&d.first_point));
        cells.push(or_dash(&d.last_point));
    }
    md_row(&cells)
}

/// The end of a class section.
pub(super) fn section_end(count: u64) -> String {
    if count == 0 {
        "（无）\n\n".to_owned()
    } else {
        format!("\n小计：{count} 台\n\n")
    }
}

/// The closing line: total and per class.
pub(super) fn footer(counts: &[u64]) -> String {
    let total: u64 = counts.iter().sum();
    let parts: Vec<String> = DeviceClass::ALL
        .iter()
        .zip(counts)
        .map(|(class, n)| format!("{} {n}", class.zh_name()))
        .collect();
    format!("合计：{total} 台（{}）\n", parts.join("，"))
}

/// Writes the Markdown list: `heading`, then for each class its section,
/// pulling pages from `source` and numbering rows from 1 within the class.
///
/// # Errors
/// A page cannot be fetched, holds a device of another class, or does not
/// advance; or `out` cannot be written.
pub(super) async fn write_markdown(
    source: &mut impl DeviceSource,
    heading: &str,
    with_day: bool,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    out.write_all(heading.as_bytes())?;
    let mut counts = Vec::with_capacity(DeviceClass::ALL.len());
    for class in DeviceClass::ALL {
        out.write_all(section_heading(*class).as_bytes())?;
        let mut count = 0u64;
        let mut after: Option<String> = None;
        loop {
            let page = source.page(*class, after.as_deref()).await?;
            let mut text = String::new();
            for device in &page.devices {
                if device.class != *class {
                    bail!(
                        "the registry listed device `{}` of class {} when asked for class {}",
                        device.device_id,
                        device.class,
                        class
                    );
                }
                if count == 0 {
                    text.push_str(&table_header(with_day));
                }
                count += 1;
                text.push_str(&device_row(count, device, with_day));
            }
            out.write_all(text.as_bytes())?;
            let (Some(_), Some(last)) = (&page.next_after, page.devices.last()) else {
                break;
            };
            // Continue after the last row received; it must move forward.
            if after
                .as_deref()
                .is_some_and(|a| a >= last.device_id.as_str())
            {
                bail!(
                    "the registry's device list did not advance past `{}`",
                    last.device_id
                );
            }
            after = Some(last.device_id.clone());
        }
        out.write_all(section_end(count).as_bytes())?;
        counts.push(count);
    }
    out.write_all(footer(&counts).as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fixed device list served in pages of `page_size`, filtered by class
    /// and ordered by id, as the registry does.
    struct Fixed {
        devices: Vec<Device>,
        page_size: usize,
        pages_served: usize,
    }

    impl Fixed {
        fn new(json: &str, page_size: usize) -> Self {
            let page: DevicePage = serde_json::from_str(json).unwrap();
            let mut devices = page.devices;
            devices.sort_by(|a, b| a.device_id.cmp(&b.device_id));
            Fixed {
                devices,
                page_size,
                pages_served: 0,
            }
        }
    }

    impl DeviceSource for Fixed {
        async fn page(
            &mut self,
            class: DeviceClass,
            after: Option<&str>,
        ) -> anyhow::Result<DevicePage> {
            self.pages_served += 1;
            let rest: Vec<Device> = self
                .devices
                .iter()
                .filter(|d| d.class == class && after.is_none_or(|a| d.device_id.as_str() > a))
                .cloned()
                .collect();
            let more = rest.len() > self.page_size;
            let devices: Vec<Device> = rest.into_iter().take(self.page_size).collect();
            let next_after = more.then(|| devices.last().map(|d| d.device_id.clone()).unwrap());
            Ok(DevicePage {
                devices,
                next_after,
            })
        }
    }

    /// The registry's JSON for the API scenario: two public mining devices,
    /// a public robot, two private AGVs and a private gas detector.
    const LIST: &str = r#"{"devices":[
        {"device_id":"agv-1","class":"mobile","category":"logistics","type":"AGV-300","name":"AGV 1","protocol":"modbus-tcp","tenant":"plant","cloud":"private","first_seen":"2026-11-26T09:30:00.123+08:00","last_seen":"2026-11-26T10:00:01.000+08:00","online":true},
        {"device_id":"agv-2","class":"mobile","category":"logistics","type":"AGV-300","name":"AGV 2","protocol":"modbus-tcp","tenant":"plant","cloud":"private","first_seen":"2026-11-26T09:30:00.124+08:00","last_seen":null,"online":false},
        {"device_id":"gas-1","class":"other","category":"safety","type":"GD-2","name":"gas detector | hall 3","protocol":"mqtt-json","tenant":"plant","cloud":"private","first_seen":"2026-11-26T09:31:00.000+08:00","last_seen":null,"online":false},
        {"device_id":"mine-1","class":"operating","category":"mining","type":"SH-40","name":"shearer 1","protocol":"modbus-tcp","tenant":"acme","cloud":"public","first_seen":"2026-11-25T08:00:00.000+08:00","last_seen":"2026-11-26T10:00:00.500+08:00","online":true},
        {"device_id":"mine-2","class":"operating","category":"mining","type":"SH-40","name":"shearer 2","protocol":"modbus-tcp","tenant":"acme","cloud":"public","first_seen":"2026-11-25T08:00:00.001+08:00","last_seen":"2026-11-25T18:00:00.000+08:00","online":false},
        {"device_id":"robot-1","class":"processing","category":"robots","type":"KR-6","name":"robot 1","protocol":"opc-ua","tenant":"acme","cloud":"public","first_seen":"2026-11-26T09:30:00.123+08:00","last_seen":"2026-11-26T09:59:59.999+08:00","online":false}
    ],"count":6}"#;

    async fn markdown(source: &mut Fixed, with_day: bool) -> String {
        let mut out = Vec::new();
        let head = heading("http://127.0.0.1:7680", "2026-11-26", "+08:00", with_day);
        write_markdown(source, &head, with_day, &mut out)
            .await
            .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[tokio::test]
    async fn devices_are_grouped_by_class_and_numbered_within_it() {
        let mut source = Fixed::new(LIST, 1);
        let md = markdown(&mut source, false).await;
        let expected = "\
# 附件1 设备清单 — 2026-11-26（UTC+08:00）

- 数据来源：Fieldlink registry http://127.0.0.1:7680
- 时间按 UTC+08:00 显示

## 运行设备（operating）

| 序号 | 设备类型 | 设备名称 | 设备ID | 细分类别 | 协议 | 云 | 首次接入 | 最近上报 |
| ---: | --- | --- | --- | --- | --- | --- | --- | --- |
| 1 | SH-40 | shearer 1 | mine-1 | 采矿设备 | Modbus TCP | 公有云 | 2026-11-25T08:00:00.000+08:00 | 2026-11-26T10:00:00.500+08:00 |
| 2 | SH-40 | shearer 2 | mine-2 | 采矿设备 | Modbus TCP | 公有云 | 2026-11-25T08:00:00.001+08:00 | 2026-11-25T18:00:00.000+08:00 |

小计：2 台

## 加工设备（processing）

| 序号 | 设备类型 | 设备名称 | 设备ID | 细分类别 | 协议 | 云 | 首次接入 | 最近上报 |
| ---: | --- | --- | --- | --- | --- | --- | --- | --- |
| 1 | KR-6 | robot 1 | robot-1 | 机器人 | OPC UA | 公有云 | 2026-11-26T09:30:00.123+08:00 | 2026-11-26T09:59:59.999+08:00 |

小计：1 台

## 行走设备（mobile）

| 序号 | 设备类型 | 设备名称 | 设备ID | 细分类别 | 协议 | 云 | 首次接入 | 最近上报 |
| ---: | --- | --- | --- | --- | --- | --- | --- | --- |
| 1 | AGV-300 | AGV 1 | agv-1 | 物流设备 | Modbus TCP | 私有云 | 2026-11-26T09:30:00.123+08:00 | 2026-11-26T10:00:01.000+08:00 |
| 2 | AGV-300 | AGV 2 | agv-2 | 物流设备 | Modbus TCP | 私有云 | 2026-11-26T09:30:00.124+08:00 | — |

小计：2 台

## 其他设备（other）

| 序号 | 设备类型 | 设备名称 | 设备ID | 细分类别 | 协议 | 云 | 首次接入 | 最近上报 |
| ---: | --- | --- | --- | --- | --- | --- | --- | --- |
| 1 | GD-2 | gas detector \\| hall 3 | gas-1 | 安全生产设备 | MQTT (JSON) | 私有云 | 2026-11-26T09:31:00.000+08:00 | — |

小计：1 台

合计：6 台（运行设备 2，加工设备 1，行走设备 2，其他设备 1）
";
        assert_eq!(md, expected);
        // Page size 1: each class of n devices took n pages (the last one
        // without `next_after`).
        assert_eq!(source.pages_served, 6);
    }

    #[tokio::test]
    async fn page_size_does_not_change_the_list() {
        let one = markdown(&mut Fixed::new(LIST, 1), false).await;
        let many = markdown(&mut Fixed::new(LIST, 5000), false).await;
        assert_eq!(one, many);
    }

    #[tokio::test]
    async fn an_empty_class_says_none() {
        let list = r#"{"devices":[
            {"device_id":"robot-1","class":"processing","category":"robots","type":"KR-6","name":"robot 1","protocol":"opc-ua","tenant":"acme","cloud":"public","first_seen":"2026-11-26T09:30:00.123+08:00","last_seen":null,"online":false}
        ],"count":1}"#;
        let md = markdown(&mut Fixed::new(list, 10), false).await;
        assert!(
            md.contains("## 运行设备（operating）\n\n（无）\n\n## 加工设备"),
            "{md}"
        );
        assert!(md.ends_with("合计：1 台（运行设备 0，加工设备 1，行走设备 0，其他设备 0）\n"));
    }

    #[tokio::test]
    async fn the_day_adds_point_columns() {
        let list = r#"{"devices":[
            {"device_id":"mine-1","class":"operating","category":"mining","type":"SH-40","name":"shearer 1","protocol":"modbus-tcp","tenant":"acme","cloud":"public","first_seen":"2026-11-25T08:00:00.000+08:00","last_seen":"2026-11-26T10:00:00.500+08:00","online":true,"points":2,"first_point":"2026-11-26T09:59:59.500+08:00","last_point":"2026-11-26T10:00:00.500+08:00"},
            {"device_id":"mine-2","class":"operating","category":"mining","type":"SH-40","name":"shearer 2","protocol":"modbus-tcp","tenant":"acme","cloud":"public","first_seen":"2026-11-25T08:00:00.001+08:00","last_seen":null,"online":false,"points":0}
        ],"count":2,"day":"2026-11-26"}"#;
        let md = markdown(&mut Fixed::new(list, 10), true).await;
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with('|')).collect();
        assert_eq!(
            rows,
            [
                "| 序号 | 设备类型 | 设备名称 | 设备ID | 细分类别 | 协议 | 云 | 首次接入 | 最近上报 | 当日数据点数 | 当日首个数据点 | 当日最后数据点 |",
                "| ---: | --- | --- | --- | --- | --- | --- | --- | --- | ---: | --- | --- |",
                "| 1 | SH-40 | shearer 1 | mine-1 | 采矿设备 | Modbus TCP | 公有云 | 2026-11-25T08:00:00.000+08:00 | 2026-11-26T10:00:00.500+08:00 | 2 | 2026-11-26T09:59:59.500+08:00 | 2026-11-26T10:00:00.500+08:00 |",
                "| 2 | SH-40 | shearer 2 | mine-2 | 采矿设备 | Modbus TCP | 公有云 | 2026-11-25T08:00:00.001+08:00 | — | 0 | — | — |",
            ]
        );
        assert!(
            md.contains("- 时间按 UTC+08:00 显示；当日数据点为 2026-11-26 当日收到的实时数据点\n")
        );
    }

    /// A registry that always returns the same page.
    struct Stuck(DevicePage);

    impl DeviceSource for Stuck {
        async fn page(&mut self, _: DeviceClass, _: Option<&str>) -> anyhow::Result<DevicePage> {
            Ok(self.0.clone())
        }
    }

    #[tokio::test]
    async fn a_list_that_does_not_advance_is_an_error() {
        let mut page: DevicePage = serde_json::from_str(LIST).unwrap();
        page.devices.retain(|d| d.class == DeviceClass::Operating);
        page.next_after = Some("mine-2".to_owned());
        let err = write_markdown(&mut Stuck(page), "", false, &mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the registry's device list did not advance past `mine-2`"
        );
    }

    #[tokio::test]
    async fn a_device_of_another_class_is_an_error() {
        let page: DevicePage = serde_json::from_str(LIST).unwrap();
        let err = write_markdown(&mut Stuck(page), "", false, &mut Vec::new())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the registry listed device `agv-1` of class mobile when asked for class operating"
        );
    }
}
