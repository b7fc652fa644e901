//! Read planning: the tags of a poll group merged into the fewest requests.
//!
//! Tags are sorted by area and address; a tag joins the current request when
//! it is in the same area, starts at or before the request's end (contiguous
//! or overlapping — gaps are not read, as unmapped addresses make devices
//! answer with an exception), and the request stays within the per-request
//! limit (125 registers, 2000 bits by default).

use super::config::{Area, TagConfig};

/// One Modbus read request and the tags it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// Register area.
    pub area: Area,
    /// First address.
    pub start: u16,
    /// Registers or bits.
    pub count: u16,
    /// (index of the tag in its group, offset of the tag from `start`).
    pub tags: Vec<(usize, u16)>,
}

/// Plans the reads of `tags` within the limits.
pub fn plan(tags: &[TagConfig], max_registers: u16, max_bits: u16) -> Vec<Read> {
    let mut order: Vec<usize> = (0..tags.len()).collect();
    order.sort_by_key(|&i| (tags[i].area, tags[i].address));
    let mut reads: Vec<Read> = Vec::new();
    for i in order {
        let tag = &tags[i];
        let span = if tag.area.is_bits() {
            1
        } else {
            tag.data_type.registers(tag.length)
        };
        let limit = if tag.area.is_bits() {
            max_bits
        } else {
            max_registers
        };
        let end = u32::from(tag.address) + u32::from(span);
        if let Some(read) = reads.last_mut() {
            let read_end = u32::from(read.start) + u32::from(read.count);
            let merged = end.max(read_end) - u32::from(read.start);
            if read.area == tag.area
                && u32::from(tag.address) <= read_end
                && merged <= u32::from(limit)
            {
                // `merged` fits u16: it is at most `limit`.
                read.count = merged as u16;
                read.tags.push((i, tag.address - read.start));
                continue;
            }
        }
        reads.push(Read {
            area: tag.area,
            start: tag.address,
            count: span,
            tags: vec![(i, 0)],
        });
    }
    reads
}

#[cfg(test)]
mod tests {
    use super::super::config::{DataType, Order};
    use super::*;

    fn tag(area: Area, address: u16, data_type: DataType) -> TagConfig {
        TagConfig {
            name: format!("t{address}"),
            area,
            address,
            data_type,
            length: 4,
            bit: None,
            byte_order: Order::Big,
            word_order: Order::Big,
            scale: 1.0,
            offset: 0.0,
            unit: String::new(),
        }
    }

    #[test]
    fn contiguous_tags_merge_and_gaps_split() {
        let tags = vec![
            tag(Area::HoldingRegister, 2, DataType::F32),
            tag(Area::HoldingRegister, 0, DataType::U32),
            tag(Area::HoldingRegister, 4, DataType::U16),
            tag(Area::HoldingRegister, 10, DataType::U16),
            tag(Area::Coil, 0, DataType::Bool),
            tag(Area::Coil, 1, DataType::Bool),
            tag(Area::InputRegister, 5, DataType::F64),
        ];
        let reads = plan(&tags, 125, 2000);
        assert_eq!(reads.len(), 4);
        assert_eq!(
            (reads[0].area, reads[0].start, reads[0].count),
            (Area::Coil, 0, 2)
        );
        assert_eq!(
            (reads[1].area, reads[1].start, reads[1].count),
            (Area::InputRegister, 5, 4)
        );
        assert_eq!(
            reads[2],
            Read {
                area: Area::HoldingRegister,
                start: 0,
                count: 5,
                tags: vec![(1, 0), (0, 2), (2, 4)]
            }
        );
        assert_eq!((reads[3].start, reads[3].count), (10, 1));
    }

    #[test]
    fn requests_respect_the_limits() {
        let tags: Vec<_> = (0..300)
            .map(|a| tag(Area::InputRegister, a, DataType::U16))
            .collect();
        let reads = plan(&tags, 125, 2000);
        assert_eq!(
            reads.iter().map(|r| r.count).collect::<Vec<_>>(),
            [125, 125, 50]
        );
        let bits: Vec<_> = (0..4500)
            .map(|a| tag(Area::DiscreteInput, a, DataType::Bool))
            .collect();
        let reads = plan(&bits, 125, 2000);
        assert_eq!(
            reads.iter().map(|r| r.count).collect::<Vec<_>>(),
            [2000, 2000, 500]
        );
        // A value never straddles two requests.
        let f64s: Vec<_> = (0..40)
            .map(|i| tag(Area::HoldingRegister, i * 4, DataType::F64))
            .collect();
        let reads = plan(&f64s, 125, 2000);
        assert_eq!(reads[0].count, 124);
    }
}
