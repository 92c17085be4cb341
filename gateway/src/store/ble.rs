//! What the BLE source keeps in the store besides readings: the last
//! glucose record sequence fetched and committed per device (so the Record
//! Access Control Point asks only for newer records, across restarts), and
//! the device's link state and battery (migration 2 `devices` columns).
//!
//! A glucometer whose sequence numbers restart (reset, or replaced by one
//! with the same address) makes "records ≥ N+1" find nothing for ever. When
//! the session detects it, [`Store::ble_reset_sequence`] starts a new epoch:
//! the cursor goes back to 0 and only readings committed since the reset
//! count towards the last sequence.

use rusqlite::{params, OptionalExtension};

use super::{now_ms, Store, StoreError};

fn racp_cursor(device_id: &str) -> String {
    format!("ble.racp:{device_id}")
}

/// When the device's sequence numbers last restarted (Unix ms).
fn racp_epoch(device_id: &str) -> String {
    format!("ble.racp-epoch:{device_id}")
}

impl Store {
    /// The highest glucose record sequence number committed for a device:
    /// the larger of its RACP cursor (advanced after each commit, including
    /// records that were quarantined) and the stored readings' sequences.
    pub fn ble_last_sequence(&self, device_id: &str) -> Result<Option<u16>, StoreError> {
        let cursor = self.cursor_if_set(&racp_cursor(device_id))?;
        let epoch = self.cursor(&racp_epoch(device_id))?;
        let stored: Option<i64> = self.conn.query_row(
            "SELECT MAX(sequence) FROM readings WHERE device_id = ?1 AND source = 'ble' AND metric = 'blood_glucose' AND sequence IS NOT NULL AND committed_at >= ?2",
            params![device_id, epoch],
            |r| r.get(0),
        )?;
        Ok(cursor.max(stored).and_then(|s| u16::try_from(s).ok()))
    }

    /// Records that glucose records up to `sequence` are committed (never
    /// moves backwards).
    pub fn ble_set_sequence(&self, device_id: &str, sequence: u16) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO cursors(name, position, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET position = MAX(position, excluded.position), updated_at = excluded.updated_at",
            params![racp_cursor(device_id), i64::from(sequence), now_ms()],
        )?;
        Ok(())
    }

    /// The device time (Unix ms) of the stored glucose record with this
    /// sequence number in the current epoch, if there is one.
    pub fn ble_sequence_time(
        &self,
        device_id: &str,
        sequence: u16,
    ) -> Result<Option<i64>, StoreError> {
        let epoch = self.cursor(&racp_epoch(device_id))?;
        Ok(self
            .conn
            .query_row(
                "SELECT device_measured_at FROM readings WHERE device_id = ?1 AND source = 'ble' AND metric = 'blood_glucose' AND sequence = ?2 AND committed_at >= ?3 ORDER BY seq DESC LIMIT 1",
                params![device_id, i64::from(sequence), epoch],
                |r| r.get(0),
            )
            .optional()?
            .flatten())
    }

    /// The device's sequence numbers restarted: a new epoch begins now,
    /// with its cursor at 0 (every record of the device is asked for again;
    /// records already stored are recognised by their ids).
    pub fn ble_reset_sequence(&self, device_id: &str) -> Result<(), StoreError> {
        let now = now_ms();
        let tx = self.conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO cursors(name, position, updated_at) VALUES (?1, 0, ?2)
             ON CONFLICT(name) DO UPDATE SET position = 0, updated_at = excluded.updated_at",
            params![racp_cursor(device_id), now],
        )?;
        tx.execute(
            "INSERT INTO cursors(name, position, updated_at) VALUES (?1, ?2, ?2)
             ON CONFLICT(name) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at",
            params![racp_epoch(device_id), now],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Updates a registered device's link state (`connected` /
    /// `disconnected`) and battery; unregistered devices are not added.
    pub fn ble_set_link(
        &self,
        device_id: &str,
        connection: &str,
        battery_pct: Option<u8>,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE devices SET connection = ?2, source = 'ble', battery_pct = COALESCE(?3, battery_pct) WHERE device_id = ?1",
            params![device_id, connection, battery_pct],
        )?;
        Ok(())
    }

    /// True when the registry knows the device.
    pub fn is_registered(&self, device_id: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM devices WHERE device_id = ?1",
                [device_id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_cursor_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.db")).unwrap();
        assert_eq!(store.ble_last_sequence("AA").unwrap(), None);
        store.ble_set_sequence("AA", 7).unwrap();
        store.ble_set_sequence("AA", 3).unwrap();
        assert_eq!(store.ble_last_sequence("AA").unwrap(), Some(7));
        assert!(!store.is_registered("AA").unwrap());
        store.ble_reset_sequence("AA").unwrap();
        assert_eq!(store.ble_last_sequence("AA").unwrap(), Some(0));
        store.ble_set_sequence("AA", 2).unwrap();
        assert_eq!(store.ble_last_sequence("AA").unwrap(), Some(2));
        store.ble_set_link("AA", "connected", Some(80)).unwrap();
    }
}
