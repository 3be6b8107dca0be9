# Lesson 4 from a shell: mailtalk mx asks the MX records and the addresses (for
# plain.test the MX first, then the A record: the implicit MX); then a message to
# shop.test through the provider (solution.mt's part, run by mailtalk run).
mailtalk mx shop.test --resolver ${NS_ISP_TEST_DNS} --brief
mailtalk mx plain.test --resolver ${NS_ISP_TEST_DNS} --brief
mailtalk mx closed.test --resolver ${NS_ISP_TEST_DNS} --brief
MAILTALK_PASSWORD=wonderland mailtalk send --server ${MAIL_ISP_TEST_SUBMISSION} --starttls --brief --cafile ${CA} --auth alice --from alice@isp.test --to sales@shop.test --subject "an order" --body "One of each, please."
