"""The allocation checkpoint: its file format (`fileformat`), the file (`file`) and a fake (`testing`)."""
