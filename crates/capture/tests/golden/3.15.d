/* pystackd capture: CPython 3.15, _PyRuntime at 0x7f0012345000, depth 8 (untested: generated) */

pid$target::malloc:entry
{
	this->py_in = pid == $target ? *(uint64_t *)copyin(0x7f0012345000 + 936, 8) : 0;
	this->py_ts = 0;
	this->py_found = 0;
	this->py_f = 0;
	this->py_more = 0;
	this->py_c0 = 0; this->py_o0 = 0; this->py_i0 = 0;
	this->py_c1 = 0; this->py_o1 = 0; this->py_i1 = 0;
	this->py_c2 = 0; this->py_o2 = 0; this->py_i2 = 0;
	this->py_c3 = 0; this->py_o3 = 0; this->py_i3 = 0;
	this->py_c4 = 0; this->py_o4 = 0; this->py_i4 = 0;
	this->py_c5 = 0; this->py_o5 = 0; this->py_i5 = 0;
	this->py_c6 = 0; this->py_o6 = 0; this->py_i6 = 0;
	this->py_c7 = 0; this->py_o7 = 0; this->py_i7 = 0;
}

pid$target::malloc:entry
/this->py_in != 0/
{
	this->py_ts = *(uint64_t *)copyin(this->py_in + 7336, 8);
}

pid$target::malloc:entry
/this->py_ts != 0 && !this->py_found/
{
	this->py_found = *(uint64_t *)copyin(this->py_ts + 176, 8) == tid;
	this->py_ts = this->py_found ? this->py_ts : *(uint64_t *)copyin(this->py_ts + 8, 8);
}

pid$target::malloc:entry
/this->py_ts != 0 && !this->py_found/
{
	this->py_found = *(uint64_t *)copyin(this->py_ts + 176, 8) == tid;
	this->py_ts = this->py_found ? this->py_ts : *(uint64_t *)copyin(this->py_ts + 8, 8);
}

pid$target::malloc:entry
/this->py_ts != 0 && !this->py_found/
{
	this->py_found = *(uint64_t *)copyin(this->py_ts + 176, 8) == tid;
	this->py_ts = this->py_found ? this->py_ts : *(uint64_t *)copyin(this->py_ts + 8, 8);
}

pid$target::malloc:entry
/this->py_ts != 0 && !this->py_found/
{
	this->py_found = *(uint64_t *)copyin(this->py_ts + 176, 8) == tid;
	this->py_ts = this->py_found ? this->py_ts : *(uint64_t *)copyin(this->py_ts + 8, 8);
}

pid$target::malloc:entry
/this->py_ts != 0 && !this->py_found/
{
	this->py_found = *(uint64_t *)copyin(this->py_ts + 176, 8) == tid;
	this->py_ts = this->py_found ? this->py_ts : *(uint64_t *)copyin(this->py_ts + 8, 8);
}

pid$target::malloc:entry
/this->py_ts != 0 && !this->py_found/
{
	this->py_found = *(uint64_t *)copyin(this->py_ts + 176, 8) == tid;
	this->py_ts = this->py_found ? this->py_ts : *(uint64_t *)copyin(this->py_ts + 8, 8);
}

pid$target::malloc:entry
/this->py_ts != 0 && !this->py_found/
{
	this->py_found = *(uint64_t *)copyin(this->py_ts + 176, 8) == tid;
	this->py_ts = this->py_found ? this->py_ts : *(uint64_t *)copyin(this->py_ts + 8, 8);
}

pid$target::malloc:entry
/this->py_ts != 0 && !this->py_found/
{
	this->py_found = *(uint64_t *)copyin(this->py_ts + 176, 8) == tid;
	this->py_ts = this->py_found ? this->py_ts : *(uint64_t *)copyin(this->py_ts + 8, 8);
}

pid$target::malloc:entry
/this->py_found/
{
	this->py_f = *(uint64_t *)copyin(this->py_ts + 72, 8);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_own = *(uint8_t *)copyin(this->py_f + 74, 1);
	this->py_nf = *(uint64_t *)copyin(this->py_f + 8, 8);
	this->py_py = this->py_own < 3;
	this->py_o0 = this->py_py ? 0 : 1;
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0 && this->py_py/
{
	this->py_code = *(uint64_t *)copyin(this->py_f, 8) & ~(uint64_t)3;
	this->py_off = (int64_t)(*(uint64_t *)copyin(this->py_f + 56, 8) - this->py_code - 208);
	this->py_keep = this->py_own == 1 || this->py_off >= 2 * (int64_t)*(int32_t *)copyin(this->py_code + 192, 4);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0 && this->py_py && this->py_keep/
{
	this->py_c0 = this->py_code;
	this->py_o0 = this->py_off;
	this->py_i0 = *(uint64_t *)copyin(this->py_c0 + 120, 8) ^ ((uint64_t)(uint32_t)*(int32_t *)copyin(this->py_c0 + 68, 4) << 48);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_f = this->py_nf;
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_own = *(uint8_t *)copyin(this->py_f + 74, 1);
	this->py_nf = *(uint64_t *)copyin(this->py_f + 8, 8);
	this->py_py = this->py_own < 3;
	this->py_o1 = this->py_py ? 0 : 1;
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0 && this->py_py/
{
	this->py_code = *(uint64_t *)copyin(this->py_f, 8) & ~(uint64_t)3;
	this->py_off = (int64_t)(*(uint64_t *)copyin(this->py_f + 56, 8) - this->py_code - 208);
	this->py_keep = this->py_own == 1 || this->py_off >= 2 * (int64_t)*(int32_t *)copyin(this->py_code + 192, 4);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0 && this->py_py && this->py_keep/
{
	this->py_c1 = this->py_code;
	this->py_o1 = this->py_off;
	this->py_i1 = *(uint64_t *)copyin(this->py_c1 + 120, 8) ^ ((uint64_t)(uint32_t)*(int32_t *)copyin(this->py_c1 + 68, 4) << 48);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_f = this->py_nf;
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_own = *(uint8_t *)copyin(this->py_f + 74, 1);
	this->py_nf = *(uint64_t *)copyin(this->py_f + 8, 8);
	this->py_py = this->py_own < 3;
	this->py_o2 = this->py_py ? 0 : 1;
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0 && this->py_py/
{
	this->py_code = *(uint64_t *)copyin(this->py_f, 8) & ~(uint64_t)3;
	this->py_off = (int64_t)(*(uint64_t *)copyin(this->py_f + 56, 8) - this->py_code - 208);
	this->py_keep = this->py_own == 1 || this->py_off >= 2 * (int64_t)*(int32_t *)copyin(this->py_code + 192, 4);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0 && this->py_py && this->py_keep/
{
	this->py_c2 = this->py_code;
	this->py_o2 = this->py_off;
	this->py_i2 = *(uint64_t *)copyin(this->py_c2 + 120, 8) ^ ((uint64_t)(uint32_t)*(int32_t *)copyin(this->py_c2 + 68, 4) << 48);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_f = this->py_nf;
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_own = *(uint8_t *)copyin(this->py_f + 74, 1);
	this->py_nf = *(uint64_t *)copyin(this->py_f + 8, 8);
	this->py_py = this->py_own < 3;
	this->py_o3 = this->py_py ? 0 : 1;
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0 && this->py_py/
{
	this->py_code = *(uint64_t *)copyin(this->py_f, 8) & ~(uint64_t)3;
	this->py_off = (int64_t)(*(uint64_t *)copyin(this->py_f + 56, 8) - this->py_code - 208);
	this->py_keep = this->py_own == 1 || this->py_off >= 2 * (int64_t)*(int32_t *)copyin(this->py_code + 192, 4);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0 && this->py_py && this->py_keep/
{
	this->py_c3 = this->py_code;
	this->py_o3 = this->py_off;
	this->py_i3 = *(uint64_t *)copyin(this->py_c3 + 120, 8) ^ ((uint64_t)(uint32_t)*(int32_t *)copyin(this->py_c3 + 68, 4) << 48);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_f = this->py_nf;
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_own = *(uint8_t *)copyin(this->py_f + 74, 1);
	this->py_nf = *(uint64_t *)copyin(this->py_f + 8, 8);
	this->py_py = this->py_own < 3;
	this->py_o4 = this->py_py ? 0 : 1;
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0 && this->py_py/
{
	this->py_code = *(uint64_t *)copyin(this->py_f, 8) & ~(uint64_t)3;
	this->py_off = (int64_t)(*(uint64_t *)copyin(this->py_f + 56, 8) - this->py_code - 208);
	this->py_keep = this->py_own == 1 || this->py_off >= 2 * (int64_t)*(int32_t *)copyin(this->py_code + 192, 4);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0 && this->py_py && this->py_keep/
{
	this->py_c4 = this->py_code;
	this->py_o4 = this->py_off;
	this->py_i4 = *(uint64_t *)copyin(this->py_c4 + 120, 8) ^ ((uint64_t)(uint32_t)*(int32_t *)copyin(this->py_c4 + 68, 4) << 48);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_f = this->py_nf;
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_own = *(uint8_t *)copyin(this->py_f + 74, 1);
	this->py_nf = *(uint64_t *)copyin(this->py_f + 8, 8);
	this->py_py = this->py_own < 3;
	this->py_o5 = this->py_py ? 0 : 1;
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0 && this->py_py/
{
	this->py_code = *(uint64_t *)copyin(this->py_f, 8) & ~(uint64_t)3;
	this->py_off = (int64_t)(*(uint64_t *)copyin(this->py_f + 56, 8) - this->py_code - 208);
	this->py_keep = this->py_own == 1 || this->py_off >= 2 * (int64_t)*(int32_t *)copyin(this->py_code + 192, 4);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0 && this->py_py && this->py_keep/
{
	this->py_c5 = this->py_code;
	this->py_o5 = this->py_off;
	this->py_i5 = *(uint64_t *)copyin(this->py_c5 + 120, 8) ^ ((uint64_t)(uint32_t)*(int32_t *)copyin(this->py_c5 + 68, 4) << 48);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_f = this->py_nf;
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_own = *(uint8_t *)copyin(this->py_f + 74, 1);
	this->py_nf = *(uint64_t *)copyin(this->py_f + 8, 8);
	this->py_py = this->py_own < 3;
	this->py_o6 = this->py_py ? 0 : 1;
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0 && this->py_py/
{
	this->py_code = *(uint64_t *)copyin(this->py_f, 8) & ~(uint64_t)3;
	this->py_off = (int64_t)(*(uint64_t *)copyin(this->py_f + 56, 8) - this->py_code - 208);
	this->py_keep = this->py_own == 1 || this->py_off >= 2 * (int64_t)*(int32_t *)copyin(this->py_code + 192, 4);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0 && this->py_py && this->py_keep/
{
	this->py_c6 = this->py_code;
	this->py_o6 = this->py_off;
	this->py_i6 = *(uint64_t *)copyin(this->py_c6 + 120, 8) ^ ((uint64_t)(uint32_t)*(int32_t *)copyin(this->py_c6 + 68, 4) << 48);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_f = this->py_nf;
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_own = *(uint8_t *)copyin(this->py_f + 74, 1);
	this->py_nf = *(uint64_t *)copyin(this->py_f + 8, 8);
	this->py_py = this->py_own < 3;
	this->py_o7 = this->py_py ? 0 : 1;
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0 && this->py_py/
{
	this->py_code = *(uint64_t *)copyin(this->py_f, 8) & ~(uint64_t)3;
	this->py_off = (int64_t)(*(uint64_t *)copyin(this->py_f + 56, 8) - this->py_code - 208);
	this->py_keep = this->py_own == 1 || this->py_off >= 2 * (int64_t)*(int32_t *)copyin(this->py_code + 192, 4);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0 && this->py_py && this->py_keep/
{
	this->py_c7 = this->py_code;
	this->py_o7 = this->py_off;
	this->py_i7 = *(uint64_t *)copyin(this->py_c7 + 120, 8) ^ ((uint64_t)(uint32_t)*(int32_t *)copyin(this->py_c7 + 68, 4) << 48);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_f = this->py_nf;
}

pid$target::malloc:entry
/this->py_found/
{
	this->py_more = this->py_f != 0;
	printf("pyframes=%x:%d:%x,%x:%d:%x,%x:%d:%x,%x:%d:%x,%x:%d:%x,%x:%d:%x,%x:%d:%x,%x:%d:%x\n", this->py_c0, this->py_o0, this->py_i0, this->py_c1, this->py_o1, this->py_i1, this->py_c2, this->py_o2, this->py_i2, this->py_c3, this->py_o3, this->py_i3, this->py_c4, this->py_o4, this->py_i4, this->py_c5, this->py_o5, this->py_i5, this->py_c6, this->py_o6, this->py_i6, this->py_c7, this->py_o7, this->py_i7);
}

pid$target::malloc:entry
/this->py_found && this->py_more/
{
	printf("pyframes+=...\n");
}

pid$target::malloc:entry
/pid == $target && !this->py_found/
{
	printf("pyframes=!nothread\n");
}

