/* pystackd capture: CPython 3.8, _PyRuntime at 0x7f0012345000, depth 8 (untested: generated) */

pid$target::malloc:entry
{
	this->py_in = pid == $target ? *(uint64_t *)copyin(0x7f0012345000 + 32, 8) : 0;
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
	this->py_ts = *(uint64_t *)copyin(this->py_in + 8, 8);
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
	this->py_f = *(uint64_t *)copyin(this->py_ts + 24, 8);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_c0 = *(uint64_t *)copyin(this->py_f + 32, 8);
	this->py_o0 = (int64_t)*(int32_t *)copyin(this->py_f + 104, 4) * 1;
	this->py_i0 = *(uint64_t *)copyin(this->py_c0 + 112, 8) ^ ((uint64_t)(uint32_t)*(int32_t *)copyin(this->py_c0 + 40, 4) << 48);
	this->py_f = *(uint64_t *)copyin(this->py_f + 24, 8);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_c1 = *(uint64_t *)copyin(this->py_f + 32, 8);
	this->py_o1 = (int64_t)*(int32_t *)copyin(this->py_f + 104, 4) * 1;
	this->py_i1 = *(uint64_t *)copyin(this->py_c1 + 112, 8) ^ ((uint64_t)(uint32_t)*(int32_t *)copyin(this->py_c1 + 40, 4) << 48);
	this->py_f = *(uint64_t *)copyin(this->py_f + 24, 8);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_c2 = *(uint64_t *)copyin(this->py_f + 32, 8);
	this->py_o2 = (int64_t)*(int32_t *)copyin(this->py_f + 104, 4) * 1;
	this->py_i2 = *(uint64_t *)copyin(this->py_c2 + 112, 8) ^ ((uint64_t)(uint32_t)*(int32_t *)copyin(this->py_c2 + 40, 4) << 48);
	this->py_f = *(uint64_t *)copyin(this->py_f + 24, 8);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_c3 = *(uint64_t *)copyin(this->py_f + 32, 8);
	this->py_o3 = (int64_t)*(int32_t *)copyin(this->py_f + 104, 4) * 1;
	this->py_i3 = *(uint64_t *)copyin(this->py_c3 + 112, 8) ^ ((uint64_t)(uint32_t)*(int32_t *)copyin(this->py_c3 + 40, 4) << 48);
	this->py_f = *(uint64_t *)copyin(this->py_f + 24, 8);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_c4 = *(uint64_t *)copyin(this->py_f + 32, 8);
	this->py_o4 = (int64_t)*(int32_t *)copyin(this->py_f + 104, 4) * 1;
	this->py_i4 = *(uint64_t *)copyin(this->py_c4 + 112, 8) ^ ((uint64_t)(uint32_t)*(int32_t *)copyin(this->py_c4 + 40, 4) << 48);
	this->py_f = *(uint64_t *)copyin(this->py_f + 24, 8);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_c5 = *(uint64_t *)copyin(this->py_f + 32, 8);
	this->py_o5 = (int64_t)*(int32_t *)copyin(this->py_f + 104, 4) * 1;
	this->py_i5 = *(uint64_t *)copyin(this->py_c5 + 112, 8) ^ ((uint64_t)(uint32_t)*(int32_t *)copyin(this->py_c5 + 40, 4) << 48);
	this->py_f = *(uint64_t *)copyin(this->py_f + 24, 8);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_c6 = *(uint64_t *)copyin(this->py_f + 32, 8);
	this->py_o6 = (int64_t)*(int32_t *)copyin(this->py_f + 104, 4) * 1;
	this->py_i6 = *(uint64_t *)copyin(this->py_c6 + 112, 8) ^ ((uint64_t)(uint32_t)*(int32_t *)copyin(this->py_c6 + 40, 4) << 48);
	this->py_f = *(uint64_t *)copyin(this->py_f + 24, 8);
}

pid$target::malloc:entry
/this->py_found && this->py_f != 0/
{
	this->py_c7 = *(uint64_t *)copyin(this->py_f + 32, 8);
	this->py_o7 = (int64_t)*(int32_t *)copyin(this->py_f + 104, 4) * 1;
	this->py_i7 = *(uint64_t *)copyin(this->py_c7 + 112, 8) ^ ((uint64_t)(uint32_t)*(int32_t *)copyin(this->py_c7 + 40, 4) << 48);
	this->py_f = *(uint64_t *)copyin(this->py_f + 24, 8);
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

