#!/usr/bin/env python3
"""Writes a libvirt test-driver node XML with N nova domains (for the benchmark and demos).

Usage: gen_node.py N > node.xml

Host: 2 sockets x 32 cores x 2 threads = 128 CPUs. Even domains are dedicated (2 vCPUs pinned
1:1, cycling through CPUs 16-127), odd ones shared (float over 0-15). Every domain carries nova
1.1 metadata with a port, a disk and an interface, as nova writes them.
"""
import sys


def domain(i):
    dedicated = i % 2 == 0
    uuid = f"{i:08x}-0000-4000-8000-{i:012x}"
    port = f"{i:08x}-1111-4111-8111-{i:012x}"
    if dedicated:
        base = 16 + (i * 2) % 112
        cputune = (f"<vcpupin vcpu='0' cpuset='{base}'/><vcpupin vcpu='1' cpuset='{base + 1}'/>"
                   "<emulatorpin cpuset='0-15'/>")
        vcpu = "<vcpu placement='static'>2</vcpu>"
        policy = "dedicated"
    else:
        cputune = "<emulatorpin cpuset='0-15'/>"
        vcpu = "<vcpu placement='static' cpuset='0-15'>2</vcpu>"
        policy = "shared"
    return f"""  <domain type='test'>
    <name>instance-{i:08x}</name>
    <uuid>{uuid}</uuid>
    <metadata>
      <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
        <nova:package version="29.0.1"/>
        <nova:name>bench-{i}</nova:name>
        <nova:creationTime>2024-05-01 10:00:00</nova:creationTime>
        <nova:flavor name="b2.{policy}" id="b2{policy[0]}">
          <nova:memory>512</nova:memory><nova:disk>1</nova:disk><nova:swap>0</nova:swap>
          <nova:ephemeral>0</nova:ephemeral><nova:vcpus>2</nova:vcpus>
          <nova:extraSpecs><nova:extraSpec name="hw:cpu_policy">{policy}</nova:extraSpec></nova:extraSpecs>
        </nova:flavor>
        <nova:owner><nova:user uuid="u-{i % 10}">user{i % 10}</nova:user><nova:project uuid="p-{i % 7}">project{i % 7}</nova:project></nova:owner>
        <nova:root type="image" uuid="img-1"/>
        <nova:ports><nova:port uuid="{port}"><nova:ip type="fixed" address="10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}" ipVersion="4"/></nova:port></nova:ports>
      </nova:instance>
    </metadata>
    <memory unit='KiB'>524288</memory>
    <currentMemory unit='KiB'>524288</currentMemory>
    {vcpu}
    <cputune>{cputune}</cputune>
    <os><type>hvm</type></os>
    <devices>
      <disk type='file' device='disk'><source file='/var/lib/nova/instances/{uuid}/disk'/><target dev='vda' bus='virtio'/></disk>
      <interface type='bridge'><mac address='fa:16:3e:{i // 65536 % 256:02x}:{i // 256 % 256:02x}:{i % 256:02x}'/><source bridge='br-int'/>
        <virtualport type='openvswitch'><parameters interfaceid='{port}'/></virtualport>
        <target dev='tap{port[:11]}'/><model type='virtio'/></interface>
      <memballoon model='virtio'/>
    </devices>
  </domain>
"""


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    out = ["<node>\n  <cpu><mhz>2400</mhz><model>x86_64</model><active>128</active><max>128</max>"
           "<nodes>1</nodes><sockets>2</sockets><cores>32</cores><threads>2</threads></cpu>\n"
           "  <memory>536870912</memory>\n"]
    out += [domain(i) for i in range(n)]
    out.append("</node>\n")
    sys.stdout.write("".join(out))


if __name__ == "__main__":
    main()
