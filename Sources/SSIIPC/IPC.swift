// SysV IPC objects saved and restored with their key and id.
