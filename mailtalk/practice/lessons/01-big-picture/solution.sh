# Lesson 1 from a shell, as another terminal would do it: mailtalk mx asks the MX
# record and then each MX host's address. ${NS_ISP_TEST_DNS} is the world's DNS
# (mailtalk practice --status shows it).
mailtalk mx isp.test --resolver ${NS_ISP_TEST_DNS} --brief
mailtalk mx example.net --resolver ${NS_ISP_TEST_DNS} --brief
